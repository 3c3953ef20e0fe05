/* Internal: parsing "project:region:instance" (REFERENCE §1). Pure, bounded. */
#ifndef CSQL_SRC_INSTANCE_NAME_H
#define CSQL_SRC_INSTANCE_NAME_H

#include <stddef.h>

#define CSQL__INSTANCE_NAME_MAX 512

typedef struct csql__instance_name {
    char full[CSQL__INSTANCE_NAME_MAX];    /* as given */
    char project[CSQL__INSTANCE_NAME_MAX]; /* may hold one colon: "google.com:my-project" */
    char region[CSQL__INSTANCE_NAME_MAX];
    char instance[CSQL__INSTANCE_NAME_MAX];
} csql__instance_name;

/*
 * Parse `s` (NUL-terminated). 0, or CSQL_ERR_BAD_INSTANCE_NAME with the
 * message: instance connection name "<s>" is not of the form project:region:instance
 * (NULL, empty, empty parts, too long, whitespace/control characters are all errors).
 */
int csql__instance_name_parse(const char *s, csql__instance_name *out);

/* "project:instance" (no region), the server certificate CN. */
int csql__instance_name_cn(const csql__instance_name *n, char *buf, size_t len);

#endif
