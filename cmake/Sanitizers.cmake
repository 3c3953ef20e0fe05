# CSQL_SANITIZE is a ;-list handed to -fsanitize= for every target.
if(CSQL_SANITIZE)
    list(JOIN CSQL_SANITIZE "," _csql_san)
    add_compile_options(-fsanitize=${_csql_san} -fno-omit-frame-pointer -fno-sanitize-recover=all)
    add_link_options(-fsanitize=${_csql_san})
endif()
