"""tm_alloc's tooling: allocation traces, the profile-driven config generator, trace replay on
the host and on emulated boards (firmware/runtime/tm_alloc*.c is the allocator itself)."""

# The allocator's files in firmware/runtime/: every build that carries tm_alloc takes all of them.
C_SOURCES = ("tm_alloc.c", "tm_alloc_large.c", "tm_alloc_check.c")
HEADERS = ("tm_alloc.h", "tm_alloc_impl.h", "tm_alloc_pool.h", "tm_alloc_default_config.h")
FILES = C_SOURCES + HEADERS
