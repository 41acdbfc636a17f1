import os

# Tests run on the CPU with tiny shapes; keep XLA from grabbing every core per process.
os.environ.setdefault("JAXDEID_PROGRESS", "0")
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false")
