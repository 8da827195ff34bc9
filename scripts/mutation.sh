#!/usr/bin/env bash
# Mutation testing (docs/TESTING.md, "Mutation testing"): plants small bugs in
# the failover decision, the "primary is dead" rule and the counter's apply
# logic with gremlins, runs the tests that guard each file against every
# mutant, and prints a score per file (killed / mutants run).
#
# gremlins runs only mutants it sees covered, and it cannot map Go's coverage
# onto the expression of a switch case, so it reports those as NOT COVERED.
# This script runs each such mutant itself (on a copy of the module) with the
# same tests, so that every mutant in the files counts.
#
# Environment:
#   MUTATION_WORKERS   parallel gremlins workers (default 2)
#   MUTATION_ONLY      "cluster" or "counter" to run one target
#   COUNTER_RUN        go test -run pattern for internal/counter
#   GREMLINS           a gremlins v0.6.0 binary (default: installed once into
#                      ${XDG_CACHE_HOME:-$HOME/.cache}/socnet/gremlins-v0.6.0)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

version=v0.6.0
workers=${MUTATION_WORKERS:-2}
only=${MUTATION_ONLY:-}
# The mutators: gremlins' defaults plus && <-> || and break <-> continue.
mutators=(--invert-logical --invert-loopctrl)

# Targets: name, package, the tests that guard the files, the files.
cluster_run='^(TestLSN|TestDecide.*|TestJudgePrimary|TestSyncListed)$'
cluster_files='decide.go dead.go'
# The store's tests run against a real PostgreSQL (pgtest); the failover and
# saga tests are left out because they take minutes per mutant.
counter_run=${COUNTER_RUN:-'^(TestEventsInAnyOrder|TestApply.*|TestEvent(Validate|Bounds)|TestResultDelivered|TestPruneInbox.*|TestCounterdAPI|TestStore.*|TestMerge.*)$'}
counter_files='store.go event.go'

gremlins=${GREMLINS:-${XDG_CACHE_HOME:-$HOME/.cache}/socnet/gremlins-$version/gremlins}
if [ ! -x "$gremlins" ]; then
	echo "installing gremlins $version into $(dirname "$gremlins")"
	mkdir -p "$(dirname "$gremlins")"
	(cd /tmp && GOFLAGS= GOBIN="$(dirname "$gremlins")" go install "github.com/go-gremlins/gremlins/cmd/gremlins@$version")
fi

work=$(mktemp -d /tmp/socnet-mutation.XXXXXX)
trap 'rm -rf "$work"' EXIT
# Deterministic property tests, no failure files from killed mutants.
export RAPID_SEED=1 RAPID_NOFAILFILE=1

# mutate FILE LINE COL TYPE: applies one gremlins mutation in place; fails
# for a type or token it does not know.
mutate() {
	awk -v line="$2" -v col="$3" -v type="$4" '
	function swap(n,   i) {
		for (i = 1; i <= n; i += 2) {
			if (substr($0, col, length(map[i])) == map[i]) {
				$0 = substr($0, 1, col - 1) map[i + 1] substr($0, col + length(map[i]))
				return 1
			}
		}
		return 0
	}
	NR == line {
		n = 0
		if (type == "CONDITIONALS_NEGATION") n = split("== != != == <= > >= < < >= > <=", map, " ")
		if (type == "CONDITIONALS_BOUNDARY") n = split("<= < >= > < <= > >=", map, " ")
		if (type == "INVERT_LOGICAL") n = split("&& || || &&", map, " ")
		if (type == "INVERT_LOOPCTRL") n = split("break continue continue break", map, " ")
		if (type == "ARITHMETIC_BASE") n = split("+ - - + * / / * % *", map, " ")
		if (type == "INCREMENT_DECREMENT") n = split("++ -- -- ++", map, " ")
		if (!swap(n)) { bad = 1 }
	}
	{ print }
	END { exit bad }' "$1" >"$1.mut" && mv "$1.mut" "$1"
}

# target NAME PKG RUN FILES: runs gremlins on PKG's FILES and then the
# mutants gremlins did not run; prints one score line per file.
target() {
	local name=$1 pkg=$2 run=$3 files=$4
	local keep='' f exclude
	for f in $files; do keep="$keep|$f"; done
	# Exclude every other .go file of the package (gremlins has no include).
	exclude="^($(cd "$pkg" && ls *.go | grep -v _test.go | grep -vxE "${keep#|}" | sed 's/\.go$//' | paste -sd'|'))\.go$"
	echo "== $name: $pkg ($files), tests $run"
	GOFLAGS="-run=$run" "$gremlins" unleash "${mutators[@]}" --workers "$workers" --test-cpu 1 \
		--timeout-coefficient 60 -o "$work/$name.json" -E "$exclude" "./$pkg" |
		grep -v 'NOT COVERED' || true

	# The mutants gremlins did not run, on a copy of the module.
	local copy=$work/$name-module
	mkdir -p "$copy"
	git ls-files -z | xargs -0 cp --parents -t "$copy"
	jq -r '.files[] | .file_name as $f | .mutations[] | select(.status == "NOT COVERED") |
		[$f, .line, .column, .type] | @tsv' "$work/$name.json" >"$work/$name.rest"
	local file line col type status
	while IFS=$'\t' read -r file line col type; do
		cp "$root/$pkg/$file" "$copy/$pkg/$file"
		if ! mutate "$copy/$pkg/$file" "$line" "$col" "$type"; then
			status='NOT RUN'
		elif (cd "$copy" && go test -count=1 -run "$run" "./$pkg" >/dev/null 2>&1); then
			status=LIVED
		else
			status=KILLED
		fi
		cp "$root/$pkg/$file" "$copy/$pkg/$file"
		printf '%12s %s at %s:%s:%s (run by this script)\n' "$status" "$type" "$file" "$line" "$col"
		printf '%s\t%s\t%s:%s:%s %s\n' "$file" "$status" "$file" "$line" "$col" "$type" >>"$work/$name.extra"
	done <"$work/$name.rest"
	touch "$work/$name.extra"

	echo "-- $name scores (killed / mutants run; timed out counts as killed, not viable is left out)"
	{
		jq -r '.files[] | .file_name as $f | .mutations[] | select(.status != "NOT COVERED") |
			[$f, .status] | @tsv' "$work/$name.json"
		cat "$work/$name.extra"
	} | awk -F'\t' -v files="$files" '
		$2 == "KILLED" || $2 == "TIMED OUT" { k[$1]++; n[$1]++ }
		$2 == "LIVED" { n[$1]++ }
		END {
			nf = split(files, fs, " ")
			for (i = 1; i <= nf; i++) {
				f = fs[i]
				printf "   %-10s %3d / %3d killed  %6.2f%%\n", f, k[f], n[f], n[f] ? 100 * k[f] / n[f] : 0
			}
		}'
	awk -F'\t' '$2 == "NOT RUN" { print "   not run: " $3 }' "$work/$name.extra"
}

if [ -z "$only" ] || [ "$only" = cluster ]; then
	target cluster internal/cluster "$cluster_run" "$cluster_files"
fi
if [ -z "$only" ] || [ "$only" = counter ]; then
	target counter internal/counter "$counter_run" "$counter_files"
fi
