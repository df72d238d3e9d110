//! BPF_PROG_TEST_RUN tests.
