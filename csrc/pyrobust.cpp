// pyrobust's compiled core as a Python extension: the module stub only.
//
// The shared object only registers ops with the PyTorch dispatcher; it exposes no Python
// objects, so PyInit__C returns an empty module and the library can use the limited API.
#include <Python.h>

extern "C" {
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {
      PyModuleDef_HEAD_INIT, "_C", "pyrobust compiled core (ops register with torch.ops.pyrobust)",
      -1, nullptr};
  return PyModule_Create(&module_def);
}
}

