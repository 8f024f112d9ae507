"""tm_alloc's tooling: allocation traces, the profile-driven config generator, trace replay on
the host and on emulated boards (firmware/runtime/tm_alloc.c is the allocator itself)."""
