package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"regexp"
	"strings"

	"socnet/internal/counter"
	"socnet/internal/dbroute"
)

// cmdCounterd runs the unread-message counter service.
func cmdCounterd(ctx context.Context, e *env, args []string) error {
	fs := newFlags("counterd", e)
	httpAddr := fs.String("http", "127.0.0.1:8091", "address to serve the counter API on")
	db := fs.String("db", "", "DSNs of the counter database's nodes, DSN[,DSN...]; any may be multi-host; the primary is found by probing")
	admin := fs.String("admin-db", "", "DSNs with the right to create tables; when set, the counter migrations are applied at start")
	mainDB := fs.String("main-db", "", "administrator DSNs of the dialogs database's nodes, for --reconcile-every")
	every := fs.Duration("reconcile-every", counter.DefaultReconcileEvery, "with --main-db, reconcile counters with the dialogs database this often and repair drift (0: never)")
	keyFile := fs.String("service-key-file", "", "file (0600) holding the key every internal request must be signed with")
	insecure := fs.Bool("insecure-no-auth", false, "serve without authentication: anyone who can connect can change any counter (trusted networks only)")
	lag := fs.Duration("max-replica-lag", dbroute.DefaultMaxReplicaLag, "a counter replica lagging more than this gets no reads")
	retention := fs.Duration("inbox-retention", counter.DefaultInboxRetention, "how long applied event ids are remembered")
	maxConns := fs.Int("max-conns", counter.DefaultCounterdConns, "connections per counter database node")
	if err := fs.parse(args); err != nil {
		return err
	}
	everyGiven := e.getenv(envName("reconcile-every")) != ""
	fs.Visit(func(f *flag.Flag) { everyGiven = everyGiven || f.Name == "reconcile-every" })
	if *mainDB == "" && !everyGiven {
		*every = 0 // the default applies only where the dialogs database is known
	}
	cfg := counter.CounterdConfig{
		HTTPAddr: *httpAddr, DBs: dbroute.SplitDSNList(*db), AdminDBs: dbroute.SplitDSNList(*admin),
		MainDBs: dbroute.SplitDSNList(*mainDB), ReconcileEvery: *every, MaxReplicaLag: *lag, InboxRetention: *retention,
		MaxConns: int32(*maxConns), InsecureNoAuth: *insecure,
	}
	switch {
	case len(cfg.DBs) == 0:
		return usageError{errors.New("counterd: --db (or SOCNET_DB) is required")}
	case cfg.ReconcileEvery > 0 && len(cfg.MainDBs) == 0:
		return usageError{errors.New("counterd: --reconcile-every needs --main-db (or SOCNET_MAIN_DB)")}
	case *keyFile == "" && !*insecure:
		return usageError{errors.New("counterd: --service-key-file (or SOCNET_SERVICE_KEY_FILE) is required; --insecure-no-auth serves without authentication")}
	case *keyFile != "" && *insecure:
		return usageError{errors.New("counterd: --service-key-file and --insecure-no-auth exclude each other")}
	}
	if *keyFile != "" {
		key, err := counter.LoadServiceKey(*keyFile)
		if err != nil {
			return fmt.Errorf("counterd: %w", err)
		}
		cfg.ServiceKey = key
	}
	warnArgvPasswords(e, args, "db", "admin-db", "main-db")
	return counter.RunCounterd(ctx, cfg, e.log)
}

// driftError is the outcome of a reconciliation that found drift it did not
// (or could not) repair.
type driftError struct{ error }

func (driftError) ExitCode() int { return 3 }

// cmdReconcile compares the counters with the dialogs database and repairs
// drift; with --check it only reports, failing when there is drift.
func cmdReconcile(ctx context.Context, e *env, args []string) error {
	fs := newFlags("reconcile", e)
	home := fs.HomeDir()
	mainDB := fs.String("main-db", "", "administrator DSNs of the dialogs database's nodes, DSN[,DSN...] (default: the stack in --home)")
	counterDB := fs.String("counter-db", "", "DSNs of the counter database's nodes, DSN[,DSN...] (default: the stack in --home)")
	check := fs.Bool("check", false, "only report; exit 3 when any counter drifts")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	drain := fs.Duration("drain-timeout", counter.DefaultDrainTimeout, "how long to wait for the relay to deliver events older than the watermark")
	if err := fs.parse(args); err != nil {
		return err
	}
	mains, counters := dbroute.SplitDSNList(*mainDB), dbroute.SplitDSNList(*counterDB)
	if len(mains) == 0 && len(counters) == 0 {
		// The stack's: reconciliation writes the dialogs database's
		// bookkeeping, which only the administrator may.
		if st, err := readStack(*home); err == nil {
			mains, counters = st.MainAdmin, st.CounterAdmin
		}
	}
	if len(mains) == 0 || len(counters) == 0 {
		return usageError{errors.New("reconcile: --main-db and --counter-db (or SOCNET_MAIN_DB, SOCNET_COUNTER_DB) are required, or a stack in --home")}
	}
	warnArgvPasswords(e, args, "main-db", "counter-db")
	db, err := dbroute.Open(ctx, dbroute.Config{Name: "counter", Nodes: counters, MaxConns: 2}, e.log)
	if err != nil {
		return fmt.Errorf("reconcile: %w", err)
	}
	defer db.Close()
	rc, err := counter.NewReconciler(mains, db, nil, e.log)
	if err != nil {
		return fmt.Errorf("reconcile: %w", err)
	}
	rep, err := rc.Run(ctx, counter.ReconcileOptions{Repair: !*check, DrainTimeout: *drain})
	if err != nil {
		return err
	}
	if *asJSON {
		out, _ := json.MarshalIndent(rep, "", "  ")
		fmt.Fprintln(e.stdout, string(out))
	} else {
		printReconcileReport(e, rep, *check)
	}
	switch {
	case *check && len(rep.Drifts) > 0:
		return driftError{fmt.Errorf("reconcile: %d dialogs drift by %d messages in total", len(rep.Drifts), rep.DriftMessages())}
	case !*check && rep.Remaining > 0:
		return driftError{fmt.Errorf("reconcile: %d of %d drifting dialogs still drift after repair", rep.Remaining, len(rep.Drifts))}
	}
	return nil
}

func printReconcileReport(e *env, rep counter.ReconcileReport, check bool) {
	for _, d := range rep.Drifts {
		state := "repaired"
		switch {
		case check:
			state = "not repaired (--check)"
		case d.RepairError != "":
			state = "repair failed: " + d.RepairError
		}
		fmt.Fprintf(e.stdout, "drift user=%s peer=%s counter=%d truth=%d recorded=%d (seq %d/%d): %s\n",
			d.UserID, d.PeerID, d.Counter, d.Truth, d.Recorded, d.CounterSeq, d.RecordedSeq, state)
	}
	fmt.Fprintf(e.stdout, "compared %d dialogs in %s: %d drifting by %d messages, %d unsettled, %d dead letters",
		rep.Compared, rep.Duration, len(rep.Drifts), rep.DriftMessages(), rep.Unsettled, rep.DeadLetters)
	if !check && len(rep.Drifts) > 0 {
		fmt.Fprintf(e.stdout, ", %d remaining after repair", rep.Remaining)
	}
	fmt.Fprintln(e.stdout)
}

// argvPassword matches a DSN that carries a password: user:pass@ in a URL
// or password= in keyword form.
var argvPassword = regexp.MustCompile(`://[^/@\s]*:[^/@\s]*@|(^|\s)password\s*=`)

// warnArgvPasswords warns when a DSN flag given on the command line holds a
// password, which every user of the machine can read in the process list.
func warnArgvPasswords(e *env, args []string, names ...string) {
	for i, a := range args {
		for _, n := range names {
			v, ok := strings.CutPrefix(strings.TrimLeft(a, "-"), n+"=")
			if !ok && strings.TrimLeft(a, "-") == n && i+1 < len(args) {
				v, ok = args[i+1], true
			}
			if ok && argvPassword.MatchString(v) {
				e.log.Warn("a password is on the command line, visible to every local user; pass the DSN in "+envName(n)+
					" or leave the password out and set PGPASSWORD", "flag", n)
			}
		}
	}
}
