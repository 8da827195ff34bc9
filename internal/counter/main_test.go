package counter_test

import (
	"bufio"
	"context"
	"encoding/hex"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"socnet/internal/counter"
	"socnet/internal/dbroute"
	"socnet/internal/pgtest"
	"socnet/internal/postgres"
	"socnet/internal/social"
)

// roleEnv makes the test binary, started again by a test, run one of the
// saga's processes instead of the tests: counterd, relay or sender. The
// tests then kill those processes with real signals.
const roleEnv = "SOCNET_COUNTER_TEST_ROLE"

// Settings of the child processes, passed in the environment.
const (
	envHTTP        = "SOCNET_COUNTER_TEST_HTTP"
	envDB          = "SOCNET_COUNTER_TEST_DB"
	envAdminDB     = "SOCNET_COUNTER_TEST_ADMIN_DB"
	envMainDB      = "SOCNET_COUNTER_TEST_MAIN_DB"
	envCounterURL  = "SOCNET_COUNTER_TEST_COUNTER_URL"
	envMaxAttempts = "SOCNET_COUNTER_TEST_MAX_ATTEMPTS"
	envUsers       = "SOCNET_COUNTER_TEST_USERS"
	envMessages    = "SOCNET_COUNTER_TEST_MESSAGES"
	envReadEvery   = "SOCNET_COUNTER_TEST_READ_EVERY"
	envSeed        = "SOCNET_COUNTER_TEST_SEED"
	envReconcile   = "SOCNET_COUNTER_TEST_RECONCILE_EVERY"
	envServiceKey  = "SOCNET_COUNTER_TEST_SERVICE_KEY" // hex of the parent's serviceKey
)

func TestMain(m *testing.M) {
	if role := os.Getenv(roleEnv); role != "" {
		os.Exit(runRole(role))
	}
	pgtest.Main(m)
}

// runRole runs a child process until it finishes or SIGTERM/SIGINT.
func runRole(role string) int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	key, err := hex.DecodeString(os.Getenv(envServiceKey))
	if err != nil || len(key) == 0 {
		fmt.Fprintf(os.Stderr, "%s: no service key in %s\n", role, envServiceKey)
		return 1
	}
	serviceKey = key
	switch role {
	case "counterd":
		every, _ := time.ParseDuration(os.Getenv(envReconcile))
		err = counter.RunCounterd(ctx, counter.CounterdConfig{
			HTTPAddr:       os.Getenv(envHTTP),
			DBs:            dbroute.SplitDSNList(os.Getenv(envDB)),
			AdminDBs:       dbroute.SplitDSNList(os.Getenv(envAdminDB)),
			MainDBs:        dbroute.SplitDSNList(os.Getenv(envMainDB)),
			ReconcileEvery: every,
			ServiceKey:     serviceKey,
		}, log)
	case "relay":
		err = runRelay(ctx, log)
	case "sender":
		err = runSender(ctx, log)
	default:
		err = fmt.Errorf("unknown role %q", role)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", role, err)
		return 1
	}
	return 0
}

func runRelay(ctx context.Context, log *slog.Logger) error {
	attempts, _ := strconv.Atoi(os.Getenv(envMaxAttempts))
	client := counter.NewClient(os.Getenv(envCounterURL), counter.WithTimeout(5*time.Second), counter.WithServiceKey(serviceKey))
	relay, err := counter.NewRelay(counter.RelayConfig{
		MainDSNs:    dbroute.SplitDSNList(os.Getenv(envMainDB)),
		Counter:     client,
		Poll:        20 * time.Millisecond,
		MaxAttempts: attempts,
		Backoff:     counter.Backoff{Base: 50 * time.Millisecond, Max: 500 * time.Millisecond},
		StatsEvery:  200 * time.Millisecond,
	}, log)
	if err != nil {
		return err
	}
	return relay.Run(ctx)
}

// runSender is an API-like process: it sends messages between the given
// users through the dialogs store and now and then marks a dialog read and
// applies the receipt directly, as the API does. It prints "sent ID" for
// every acknowledged message, so that a test that kills it knows what must
// not be lost.
func runSender(ctx context.Context, log *slog.Logger) error {
	users := strings.Split(os.Getenv(envUsers), ",")
	n, _ := strconv.Atoi(os.Getenv(envMessages))
	readEvery, _ := strconv.Atoi(os.Getenv(envReadEvery))
	seed, _ := strconv.ParseUint(os.Getenv(envSeed), 10, 64)
	db, err := dbroute.Open(ctx, dbroute.Config{Name: "main", Nodes: dbroute.SplitDSNList(os.Getenv(envMainDB)), MaxConns: 4}, log)
	if err != nil {
		return err
	}
	defer db.Close()
	dialogs := postgres.NewDialogStore(db)
	var client *counter.Client
	if u := os.Getenv(envCounterURL); u != "" {
		client = counter.NewClient(u, counter.WithTimeout(time.Second), counter.WithServiceKey(serviceKey))
	}
	out := bufio.NewWriter(os.Stdout)
	rng := rand.New(rand.NewPCG(seed, seed+1))
	pair := func() (string, string) {
		i := rng.IntN(len(users))
		j := (i + 1 + rng.IntN(len(users)-1)) % len(users)
		return users[i], users[j]
	}
	for i := 1; i <= n && ctx.Err() == nil; i++ {
		from, to := pair()
		m := social.Message{From: from, To: to, Text: fmt.Sprintf("message %d", i)}
		if err := dialogs.SendMessage(ctx, &m); err != nil {
			log.Warn("send", "err", err)
			continue
		}
		fmt.Fprintf(out, "sent %s\n", m.ID)
		out.Flush()
		if readEvery > 0 && i%readEvery == 0 {
			reader, peer := pair()
			r, err := dialogs.MarkRead(ctx, reader, peer)
			if err != nil {
				log.Warn("mark read", "err", err)
				continue
			}
			if client != nil {
				// As the API: best effort here, the relay delivers it anyway.
				if err := client.ApplyRead(ctx, r); err != nil {
					log.Debug("apply read", "err", err)
				}
			}
		}
	}
	fmt.Fprintln(out, "done")
	return out.Flush()
}
