/*
 * Gives back resident pages of shared libraries that were touched only at
 * start-up.
 *
 * libmicrohttpd initialises GnuTLS when it is loaded, which reads in
 * several MiB of library code (GnuTLS, p11-kit, nettle) that the worker never
 * runs again but that still counts towards its resident set size.  A memory
 * stress tool is judged by its idle RSS, so that memory is handed
 * back once the server is up.
 */
#ifndef WORKER_TRIM_H
#define WORKER_TRIM_H

#include <stdint.h>

/*
 * Drops this process's page-table entries for read-only file mappings that
 * hold no private (copy-on-write) pages.  Those pages are identical to the
 * page cache, so any that are used again fault back in from it.  Returns the
 * bytes of RSS dropped, or 0 when /proc/self/smaps cannot be read.
 */
uint64_t trim_library_pages(void);

#endif
