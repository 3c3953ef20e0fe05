/* Symbol visibility for the csql public API. */
#ifndef CSQL_EXPORT_H
#define CSQL_EXPORT_H

#if defined(CSQL_BUILDING_LIBRARY) && defined(__GNUC__)
#define CSQL_EXTERN __attribute__((visibility("default")))
#else
#define CSQL_EXTERN
#endif

#endif
