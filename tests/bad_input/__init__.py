"""Bad inputs on every entry point: one table per family, each case run in a worker process.

``harness`` holds the case type, the in-worker evaluation and the worker pool; ``worker`` is the
worker's main loop; ``fixtures`` builds the files, models and loaders the cases need (in the
worker, lazily); ``cases_<family>`` are the tables, collected by ``tests/test_bad_input.py``.
"""
