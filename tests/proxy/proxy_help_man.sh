#!/usr/bin/env bash
# Every flag that `csql-proxy --help` (and `wait --help`, `shutdown --help`)
# shows is documented in docs/csql-proxy.1.md, and every flag the man page
# names is in the help. Also: each flag the help shows is accepted.
set -euo pipefail
proxy=${CSQL_PROXY:?CSQL_PROXY must name csql-proxy}
man=${CSQL_SOURCE_DIR:?}/docs/csql-proxy.1.md
flags_in() { grep -oE -- '--[a-z][a-z0-9-]+' | sort -u; }

help=$({ "$proxy" --help; "$proxy" wait --help; "$proxy" shutdown --help; } | flags_in)
doc=$(flags_in <"$man")
only_help=$(comm -23 <(echo "$help") <(echo "$doc"))
only_doc=$(comm -13 <(echo "$help") <(echo "$doc"))
[ -z "$only_help" ] || { echo "in --help but not in $man:" $only_help >&2; exit 1; }
[ -z "$only_doc" ] || { echo "in $man but not in --help:" $only_doc >&2; exit 1; }
echo "help and man page agree on $(echo "$help" | wc -l) flags"

# The short forms shown in the help are the ones documented.
while read -r s l; do
    s=${s%,}
    grep -qF -- "**$s**, **$l**" "$man" || { echo "man page lacks \"**$s**, **$l**\"" >&2; exit 1; }
done < <("$proxy" --help | grep -oE '^  -[a-z], --[a-z-]+' | sed 's/^  //')

# Every main-command flag in the help is known to the parser. Flags are read before
# any value is checked, so a trailing unknown flag stops each run before it starts.
while read -r f; do
    out=$("$proxy" "$f=x" --no-such-flag p:r:i 2>&1 </dev/null) && { echo "$f: started?" >&2; exit 1; }
    case "$out" in
        *"unknown flag $f "*) echo "--help shows $f but the parser does not know it: $out" >&2; exit 1 ;;
    esac
done < <("$proxy" --help | grep -oE '^  (-[a-z], )?--[a-z-]+' | grep -oE -- '--[a-z-]+')
echo "every flag in --help parses"
