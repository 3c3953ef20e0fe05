/* csql: the Cloud SQL connector for C. Umbrella header. */
#ifndef CSQL_CSQL_H
#define CSQL_CSQL_H

#include "csql/errors.h"
#include "csql/version.h"

#endif
