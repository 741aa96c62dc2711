// A tiny test harness for the C++ tests: EXPECT records failures, main returns their count.
#pragma once

#include <cstdio>

namespace pyrobust_test {
inline int& failures() {
  static int count = 0;
  return count;
}
}  // namespace pyrobust_test

#define EXPECT(cond)                                                                 \
  do {                                                                              \
    if (!(cond)) {                                                                  \
      std::fprintf(stderr, "%s:%d: EXPECT failed: %s\n", __FILE__, __LINE__, #cond); \
      ++pyrobust_test::failures();                                                  \
    }                                                                               \
  } while (0)

#define EXPECT_THROWS(expr)              \
  do {                                  \
    bool threw = false;                 \
    try {                               \
      (void)(expr);                     \
    } catch (const std::exception&) {   \
      threw = true;                     \
    }                                   \
    EXPECT(threw && "expected: " #expr); \
  } while (0)
