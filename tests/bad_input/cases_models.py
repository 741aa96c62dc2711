"""stub"""
from tests.bad_input.harness import table

CASES = table()
