#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Fails when the published image (Dockerfile) can drift from the image the e2e tests run
# (image/build-oci.sh):
#   image/check-dockerfile.sh [OCI_ARCHIVE]
# - the final stage is FROM scratch and holds only the rootfs.sh output (COPY --from=STAGE DIR /);
# - STAGE copies image/rootfs.sh from the context and runs it with DIR as DEST_DIR;
# - the final stage's USER and ENTRYPOINT equal IMAGE_USER and IMAGE_ENTRYPOINT in
#   image/image.env, which build-oci.sh writes into the image config;
# - with OCI_ARCHIVE (build-oci.sh's output), its config's User, Entrypoint and Cmd agree too.
# DOCKERFILE overrides the Dockerfile checked. Needs jq (and tar for OCI_ARCHIVE).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=image.env
. "$here/image.env"
dockerfile=${DOCKERFILE:-$here/../Dockerfile}
archive=${1:-}
me=${0##*/}
command -v jq >/dev/null || { echo "$me: jq is not installed: apt-get install -y jq" >&2; exit 1; }
[ -f "$dockerfile" ] || { echo "$me: $dockerfile: no such file" >&2; exit 1; }

errors=()
fail() { errors+=("$*"); }

# Instructions one per line: comments and blank lines dropped (as docker does, also inside a
# continued instruction), continuations joined, blanks squeezed.
mapfile -t lines < <(sed -e '/^[[:space:]]*#/d' -e '/^[[:space:]]*$/d' "$dockerfile" \
  | sed -e ':a' -e '/\\[[:space:]]*$/{N;s/\\[[:space:]]*\n/ /;ba' -e '}' | tr -s ' \t' '  ')
keyword() { local k=${1%% *}; echo "${k^^}"; }
args() { case $1 in *" "*) echo "${1#* }" ;; *) echo "" ;; esac; }

# Stages: start index of each; the name after AS.
starts=() names=()
for i in "${!lines[@]}"; do
  if [ "$(keyword "${lines[$i]}")" = FROM ]; then
    starts+=("$i")
    n=$(sed -n 's/^[^ ]* [^ ]* [Aa][Ss] \([^ ]*\)$/\1/p' <<<"${lines[$i]}")
    names+=("$n")
  fi
done
[ "${#starts[@]}" -gt 0 ] || { echo "$me: $dockerfile has no FROM" >&2; exit 1; }
last=$((${#starts[@]} - 1))

final_from=$(args "${lines[${starts[$last]}]}")
[ "${final_from%% *}" = scratch ] \
  || fail "the final stage is FROM $final_from, not FROM scratch: its base image's files would not be in the e2e image"

copy_stage="" copy_src="" user="" entrypoint="" copies=0
for ((i = starts[last] + 1; i < ${#lines[@]}; i++)); do
  line=${lines[$i]}
  case $(keyword "$line") in
    COPY)
      copies=$((copies + 1))
      if [[ $line =~ ^[A-Za-z]+\ --from=([^ ]+)\ ([^ ]+)\ /$ ]]; then
        copy_stage=${BASH_REMATCH[1]} copy_src=${BASH_REMATCH[2]}
      else
        fail "final stage: '$line' is not 'COPY --from=STAGE DIR /' (the rootfs.sh output, nothing else)"
      fi
      ;;
    USER) user=$(args "$line") ;;
    ENTRYPOINT) entrypoint=$(args "$line") ;;
    # No effect on the files or on how the container runs.
    LABEL | ARG) ;;
    *) fail "final stage: '$line': the e2e image (image/build-oci.sh) has no such step" ;;
  esac
done
[ "$copies" -eq 1 ] || fail "final stage: $copies COPY instructions; exactly one (COPY --from=STAGE DIR /) expected"

[ "$user" = "$IMAGE_USER" ] \
  || fail "final stage: USER is '${user:-<none>}', image/image.env IMAGE_USER is '$IMAGE_USER'"
want_ep=$(jq -c . <<<"$IMAGE_ENTRYPOINT")
if [ -z "$entrypoint" ]; then
  fail "final stage: no ENTRYPOINT, image/image.env IMAGE_ENTRYPOINT is $want_ep"
elif ! got_ep=$(jq -ce 'select(type == "array")' <<<"$entrypoint" 2>/dev/null); then
  fail "final stage: ENTRYPOINT $entrypoint is not the JSON (exec) form; IMAGE_ENTRYPOINT is $want_ep"
elif [ "$got_ep" != "$want_ep" ]; then
  fail "final stage: ENTRYPOINT is $got_ep, image/image.env IMAGE_ENTRYPOINT is $want_ep"
fi

# The stage the files come from must run image/rootfs.sh with DEST_DIR = the copied directory.
if [ -n "$copy_stage" ]; then
  s=-1
  for j in "${!names[@]}"; do [ "${names[$j]}" = "$copy_stage" ] && s=$j; done
  if [ "$s" -lt 0 ] || [ "$s" -eq "$last" ]; then
    fail "COPY --from=$copy_stage: no earlier stage named $copy_stage"
  else
    end=${starts[$((s + 1))]}
    copied=0 ran=0
    for ((i = starts[s] + 1; i < end; i++)); do
      line=${lines[$i]}
      case $(keyword "$line") in
        COPY) [[ " $line " == *" image/rootfs.sh "* ]] && copied=1 ;;
        RUN) [[ $line =~ (^|[\ /])rootfs\.sh\ [^\ ]+\ ${copy_src//\//\\/}/?$ ]] && ran=1 ;;
      esac
    done
    [ "$copied" -eq 1 ] || fail "stage $copy_stage does not COPY image/rootfs.sh from the context"
    [ "$ran" -eq 1 ] || fail "stage $copy_stage does not end a RUN with 'rootfs.sh BINARY $copy_src'"
  fi
fi

# build-oci.sh must take the config from image.env, or the comparison above proves nothing.
# shellcheck disable=SC2016 # the $ are literal: the pattern matches the script's text
grep -q '^oci_pack .*"\$IMAGE_USER" "\$IMAGE_ENTRYPOINT"' "$here/build-oci.sh" \
  || fail "image/build-oci.sh does not pack with \$IMAGE_USER and \$IMAGE_ENTRYPOINT from image/image.env"

if [ -n "$archive" ]; then
  # The config as the archive carries it: index.json -> manifest -> config.
  blob() { tar -xOf "$archive" "blobs/sha256/${1#sha256:}"; }
  if ! index=$(tar -xOf "$archive" index.json 2>/dev/null); then
    fail "$archive: no index.json (not an OCI archive from build-oci.sh)"
  else
    config=$(blob "$(blob "$(jq -r '.manifests[0].digest' <<<"$index")" | jq -r .config.digest)")
    got=$(jq -c '[.config.User, .config.Entrypoint, .config.Cmd]' <<<"$config")
    want=$(jq -cn --arg u "$IMAGE_USER" --argjson e "$want_ep" '[$u, $e, null]')
    [ "$got" = "$want" ] \
      || fail "$archive: config [User, Entrypoint, Cmd] is $got, image/image.env says $want"
  fi
fi

if [ "${#errors[@]}" -gt 0 ]; then
  for e in "${errors[@]}"; do printf '%s: %s\n' "$me" "$e" >&2; done
  echo "$me: $dockerfile drifts from the e2e image (image/build-oci.sh, image/image.env)" >&2
  exit 1
fi
echo "$me: ok: FROM scratch + rootfs.sh output, USER $IMAGE_USER, ENTRYPOINT $want_ep"
