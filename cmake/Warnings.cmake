# Warning set for every target of the project (DESIGN.md, "Style").
set(CSQL_WARNINGS
    -Wall -Wextra -Wshadow -Wcast-qual -Wwrite-strings -Wformat=2 -Wformat-security
    -Wstrict-prototypes -Wmissing-prototypes -Wold-style-definition -Wpointer-arith
    -Wundef -Wvla -Wnull-dereference -Wdouble-promotion
    # snprintf truncation is bounded by design; the warning fires on every such use.
    -Wno-format-truncation)
if(CSQL_WERROR)
    list(APPEND CSQL_WARNINGS -Werror)
endif()

# csql_target_defaults(target): warnings, hardening, position-independent code.
function(csql_target_defaults target)
    target_compile_options(${target} PRIVATE ${CSQL_WARNINGS})
    target_compile_definitions(${target} PRIVATE _GNU_SOURCE)
    set_target_properties(${target} PROPERTIES POSITION_INDEPENDENT_CODE ON)
endfunction()
