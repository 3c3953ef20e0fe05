/* csql version, at compile time and at run time. */
#ifndef CSQL_VERSION_H
#define CSQL_VERSION_H

#include "csql/export.h"

#ifdef __cplusplus
extern "C" {
#endif

#define CSQL_VERSION_MAJOR 0
#define CSQL_VERSION_MINOR 1
#define CSQL_VERSION_PATCH 0
#define CSQL_VERSION_STRING "0.1.0"
/* MAJOR * 10000 + MINOR * 100 + PATCH */
#define CSQL_VERSION_NUMBER (CSQL_VERSION_MAJOR * 10000 + CSQL_VERSION_MINOR * 100 + CSQL_VERSION_PATCH)

/* The version of the library actually linked, as "MAJOR.MINOR.PATCH". */
CSQL_EXTERN const char *csql_version(void);

/* The version of the library actually linked, as CSQL_VERSION_NUMBER encodes it. */
CSQL_EXTERN int csql_version_number(void);

#ifdef __cplusplus
}
#endif
#endif
