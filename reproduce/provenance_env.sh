# Sourced by benchmarks/gpu.sh and reproduce/gpu_small.sh, which may run on a copy of the tree
# without .git (a GPU machine). export_provenance: JAXDEID_GIT_COMMIT and JAXDEID_SOURCE_SHA256
# for every result the script writes, unless the caller set them. Both come from
# jaxdeid/results.py (git_commit: the commit, +dirty when the code differs from it; source_digest:
# the source that runs), so the rule lives in one place. A copy whose files differ from the
# digest writes "<commit>+mismatch", one without a digest "<commit>+unverified".
export_provenance() {
  if [ -z "${JAXDEID_GIT_COMMIT:-}" ]; then
    JAXDEID_GIT_COMMIT=$(python3 -c 'from jaxdeid.results import git_commit; print(git_commit())')
  fi
  export JAXDEID_GIT_COMMIT
  # The digest only where the commit is known here (a checkout with .git); otherwise the caller's.
  if [ -z "${JAXDEID_SOURCE_SHA256:-}" ] && [ -d .git ]; then
    JAXDEID_SOURCE_SHA256=$(python3 -c 'from jaxdeid.results import source_digest; print(source_digest())')
    export JAXDEID_SOURCE_SHA256
  fi
}
