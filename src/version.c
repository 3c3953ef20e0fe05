/* Run-time version query. */
#include "csql/version.h"

const char *csql_version(void)
{
    return CSQL_VERSION_STRING;
}

int csql_version_number(void)
{
    return CSQL_VERSION_NUMBER;
}
