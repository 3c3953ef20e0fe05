/* Internal to libcsql-mysql: what csql_mysql_async.c borrows from csql_mysql.c. */
#ifndef CSQL_DRIVERS_MYSQL_INTERNAL_H
#define CSQL_DRIVERS_MYSQL_INTERNAL_H

#include <stddef.h>

#include "csql/dialer.h"

/*
 * The instance must run MySQL; an IAM principal in user becomes its database
 * user in dbuser ("" when user is used as is). Reads the (warm) cache.
 */
int csql_mysql__check(csql_dialer *d, const char *instance, const csql_dial_options *opts,
                      const char *user, char *dbuser, size_t len);

#endif
