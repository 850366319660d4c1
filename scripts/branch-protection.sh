#!/usr/bin/env bash
# Protect main on GitHub: merges need a reviewed pull request whose CI checks all passed.
#   scripts/branch-protection.sh [OWNER/REPO]    (default: the repository of the current checkout)
# Needs the GitHub CLI logged in as a repository admin (`gh auth login`). Re-running it applies the same settings.
set -euo pipefail

current_repo='{owner}/{repo}'  # gh api fills these in from the checkout's remote
repo="${1:-$current_repo}"
branch="${BRANCH:-main}"

# The check names are the job names in .github/workflows/ci.yml and release.yml (tests/delivery check they match).
required_checks=(
  "Lint and type check"
  "Security"
  "Test (Python 3.10)"
  "Test (Python 3.11)"
  "Test (Python 3.12)"
  "Build, scan and push the image"
)

checks_json=$(printf '%s\n' "${required_checks[@]}" | python3 -c '
import json, sys
print(json.dumps([{"context": line.rstrip("\n")} for line in sys.stdin]))')

gh api --method PUT "repos/$repo/branches/$branch/protection" \
  -H "Accept: application/vnd.github+json" --input - <<JSON
{
  "required_status_checks": {"strict": true, "checks": $checks_json},
  "enforce_admins": true,
  "required_pull_request_reviews": {
    "required_approving_review_count": 1,
    "dismiss_stale_reviews": true,
    "require_last_push_approval": true
  },
  "restrictions": null,
  "required_linear_history": true,
  "required_conversation_resolution": true,
  "allow_force_pushes": false,
  "allow_deletions": false
}
JSON
echo "protected $branch of $repo"
