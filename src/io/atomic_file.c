/* atomic_file.c - temporary names, stale temporary files and directory sync for the atomic
 * writer (atomic_file.h). */
#define _POSIX_C_SOURCE 200809L
#include "io/atomic_file.h"
#include "base/internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

char *atomic_tmp_name(const char *path) {
    const size_t n = strlen(path) + 32;
    char *tmp = malloc(n);
    if (tmp) snprintf(tmp, n, "%s.tmp.%ld", path, (long)getpid());
    return tmp;
}

/* The directory of path (malloc'ed) and where its base name starts in path. */
static char *dir_of(const char *path, const char **base) {
    const char *slash = strrchr(path, '/');
    const size_t n = !slash ? 1 : slash == path ? 1 : (size_t)(slash - path);
    char *dir = malloc(n + 1);
    if (!dir) return NULL;
    if (!slash) memcpy(dir, ".", 1);
    else memcpy(dir, path, n);
    dir[n] = '\0';
    *base = slash ? slash + 1 : path;
    return dir;
}

/* The pid of a name "<base>.tmp.<pid>", or 0 when the name is not one. */
static long stale_pid(const char *name, const char *base) {
    const size_t nb = strlen(base);
    if (strncmp(name, base, nb) != 0 || strncmp(name + nb, ".tmp.", 5) != 0) return 0;
    const char *p = name + nb + 5;
    char *end;
    errno = 0;
    const long pid = strtol(p, &end, 10);
    return *p && !*end && errno == 0 && pid > 0 ? pid : 0;
}

void atomic_remove_stale(const char *path) {
    const char *base;
    char *dir = dir_of(path, &base);
    DIR *d = dir ? opendir(dir) : NULL;
    if (!d) {
        free(dir);
        return;
    }
    const long me = (long)getpid();
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        const long pid = stale_pid(e->d_name, base);
        /* kill(pid, 0) fails with ESRCH only when no such process exists */
        if (pid == 0 || pid == me || kill((pid_t)pid, 0) == 0 || errno != ESRCH) continue;
        const size_t n = strlen(dir) + strlen(e->d_name) + 2;
        char *f = malloc(n);
        if (f) {
            snprintf(f, n, "%s/%s", dir, e->d_name);
            unlink(f);
        }
        free(f);
    }
    closedir(d);
    free(dir);
}

moe_status atomic_sync_dir(const char *path) {
    const char *base;
    char *dir = dir_of(path, &base);
    if (!dir) return moe_fail(MOE_ERR_NOMEM, "out of memory syncing the directory of %s", path);
    moe_status s = MOE_OK;
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd < 0) {
        s = moe_fail(MOE_ERR_IO, "%s was written but its directory %s cannot be opened to sync it: %s", path, dir,
                     strerror(errno));
    } else {
        /* EINVAL: this file system cannot sync directories, so there is nothing more to do. */
        if (fsync(fd) != 0 && errno != EINVAL)
            s = moe_fail(MOE_ERR_IO, "%s was written but syncing directory %s failed: %s", path, dir, strerror(errno));
        close(fd);
    }
    free(dir);
    return s;
}
