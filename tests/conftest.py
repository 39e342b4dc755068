"""Make the repository root importable (configs/, models/, ...) from any test."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402

# Tests build the same tiny models many times (each train() call jits afresh): keep compiled
# executables in a persistent cache for the session so identical programs compile once.
_CACHE = os.environ.get("SCORE_SDE_TEST_COMPILATION_CACHE", "/tmp/score_sde_test_jax_cache")
jax.config.update("jax_compilation_cache_dir", _CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
