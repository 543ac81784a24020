"""Helpers shared by the tests: free ports, child processes (``slm-harness``, Locust, the
emulator) started and stopped by PID, and real database servers."""
