/* version.c - moe_version(): the version of the library a program is running with, from the
 * MOE_VERSION_* macros of moe.h (the one place the version is written). */
#include "moe.h"

#define MOE_STR_(x) #x
#define MOE_STR(x) MOE_STR_(x)

const char *moe_version(void) {
    return MOE_STR(MOE_VERSION_MAJOR) "." MOE_STR(MOE_VERSION_MINOR) "." MOE_STR(MOE_VERSION_PATCH);
}

int moe_version_number(void) { return MOE_VERSION_NUMBER; }
