/* atomic_file.h - the file-system side of writing a file atomically (internal): the directory
 * entry made durable after the rename, and the temporary files that killed writers left behind
 * removed by the next write of the same path. */
#ifndef MOE_ATOMIC_FILE_H
#define MOE_ATOMIC_FILE_H

#include "moe.h"

/* The temporary file of this process for `path`: "<path>.tmp.<pid>" (malloc'ed; NULL: out of
 * memory). */
char *atomic_tmp_name(const char *path);
/* Removes "<path>.tmp.<pid>" files whose process is gone (a writer killed mid-save). Files of a
 * live process (another writer, or a reused pid) stay. Best effort: never fails. */
void atomic_remove_stale(const char *path);
/* fsync of path's directory, so that a crash after the rename keeps the new entry. */
moe_status atomic_sync_dir(const char *path);

#endif
