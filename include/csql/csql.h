/* csql: the Cloud SQL connector for C. Umbrella header. */
#ifndef CSQL_CSQL_H
#define CSQL_CSQL_H

#include "csql/async.h"
#include "csql/config.h"
#include "csql/conn.h"
#include "csql/dialer.h"
#include "csql/endpoint.h"
#include "csql/errors.h"
#include "csql/helper.h"
#include "csql/log.h"
#include "csql/version.h"

#endif
