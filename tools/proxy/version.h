/* csql-proxy's version: the project's (set by CMake), and what the linked libcsql offers. */
#ifndef CSQL_PROXY_VERSION_H
#define CSQL_PROXY_VERSION_H

#ifndef CSQL_PROXY_VERSION
#define CSQL_PROXY_VERSION "0.0.0"
#endif

#endif
