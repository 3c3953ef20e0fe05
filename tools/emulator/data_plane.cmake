# Data plane of csql-emulator: certificate authorities and the server-side proxy.
set(EMU_DATA_SOURCES
    ${CMAKE_CURRENT_LIST_DIR}/ca.c
    ${CMAKE_CURRENT_LIST_DIR}/mdx_server.c
    ${CMAKE_CURRENT_LIST_DIR}/backend_auth.c
    ${CMAKE_CURRENT_LIST_DIR}/backend_auth_wire.c
    ${CMAKE_CURRENT_LIST_DIR}/server_proxy.c
    ${CMAKE_CURRENT_LIST_DIR}/server_proxy_conn.c
)
