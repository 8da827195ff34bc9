package cluster

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// switchoverCatchUp bounds the wait for the target to replay the old
// primary's last WAL.
const switchoverCatchUp = 30 * time.Second

// Switchover hands the primary role to target without losing a commit: the
// primary is shut down fast (its walsenders send every WAL record, up to the
// shutdown checkpoint, to the streaming standbys before it exits), target
// replays up to that checkpoint, is promoted, the other replicas follow it,
// and the old primary rejoins as a replica. If target does not catch up in
// time the old primary is started again as the primary and the switchover is
// refused.
func (c *Cluster) Switchover(ctx context.Context, target string) (Outcome, error) {
	c.op.Lock()
	defer c.op.Unlock()
	if err := c.checkRunnable("switchover"); err != nil {
		return Outcome{}, err
	}
	st := c.snapshot()
	old := st.primary().Name
	tn := st.node(target)
	switch {
	case tn == nil:
		return Outcome{}, refuse("switchover", "%s is not a node of cluster %s", target, c.Name())
	case target == old:
		return Outcome{}, refuse("switchover", "%s is already primary", target)
	case tn.NeedsRejoin:
		return Outcome{}, refuse("switchover", "%s waits to rejoin; rejoin it first", target)
	}
	if err := c.checkPrimaryAnswers(ctx, "switchover"); err != nil {
		return Outcome{}, err
	}
	if err := c.waitStreaming(ctx, old, []string{target}, switchoverStreamWait); err != nil {
		if ctx.Err() != nil {
			return Outcome{}, fmt.Errorf("switchover: %w", ctx.Err())
		}
		return Outcome{}, refuse("switchover", "%s is not streaming from %s: %v", target, old, err)
	}

	start := c.opts.Now()
	log := c.log.With("old_primary", old, "new_primary", target)
	log.Info("switchover starts")
	syncNames := SyncNames("FIRST", st.others(target))
	if err := c.setSyncNames(ctx, target, syncNames); err != nil {
		return Outcome{}, fmt.Errorf("switchover: %w", err)
	}
	// From here a crash leaves a state that resuming completes: the old
	// primary is never started as a primary again unless we undo below.
	if err := c.update(func(st *state) { st.Promoting = target; st.node(old).NeedsRejoin = true }); err != nil {
		return Outcome{}, fmt.Errorf("switchover: %w", err)
	}
	c.bump()
	stopped := c.opts.Now()
	stopCtx, cancel := context.WithTimeout(ctx, 60*time.Second)
	err := c.stopNode(stopCtx, old)
	cancel()
	if err != nil {
		return Outcome{}, c.undoSwitchover(ctx, old, fmt.Errorf("switchover: %w", err))
	}
	c.probers[old].close()
	final, err := c.checkpointLSN(ctx, old)
	if err != nil {
		return Outcome{}, c.undoSwitchover(ctx, old, fmt.Errorf("switchover: %w", err))
	}
	log.Info("old primary stopped", "final_checkpoint", final, "ms", c.opts.Now().Sub(stopped).Milliseconds())
	if err := c.waitReplayedPast(ctx, target, final, switchoverCatchUp); err != nil {
		return Outcome{}, c.undoSwitchover(ctx, old, refuse("switchover", "%v; %s is primary again", err, old))
	}
	if err := c.Node(target).Promote(ctx); err != nil {
		return Outcome{}, fmt.Errorf("switchover: %w", err)
	}
	rec := FailoverRecord{ID: c.opts.NewID(), Kind: "switchover", At: start, OldPrimary: old, NewPrimary: target,
		LSN: final, Reason: fmt.Sprintf("planned switchover; %s replayed past the final checkpoint %s of %s", target, final, old)}
	rec, err = c.installPrimary(ctx, rec, syncNames, []string{old})
	if err != nil {
		return Outcome{}, fmt.Errorf("switchover: %w", err)
	}
	rec.PromotionMS = c.opts.Now().Sub(stopped).Milliseconds()
	var follow []string
	for _, n := range st.others(target) {
		if n != old && !st.node(n).NeedsRejoin {
			follow = append(follow, n)
		}
	}
	c.repoint(ctx, target, follow)
	rec.TotalMS = c.opts.Now().Sub(start).Milliseconds()
	if err := c.record(rec); err != nil {
		return Outcome{}, fmt.Errorf("switchover: %w", err)
	}
	log.Info("switched over", "lsn", final, "writes_unavailable_ms", rec.PromotionMS, "total_ms", rec.TotalMS)
	out := Outcome{Message: fmt.Sprintf("switchover: %s -> %s at %s; writes paused %d ms", old, target, final, rec.PromotionMS), Record: &rec}
	t0 := c.opts.Now()
	if _, err := c.rejoinLocked(ctx, old); err != nil {
		out.Message += fmt.Sprintf("; %s has not rejoined yet: %v", old, err)
		return out, nil
	}
	rec.RejoinMS = c.opts.Now().Sub(t0).Milliseconds()
	if err := c.record(rec); err != nil {
		return out, fmt.Errorf("switchover: %w", err)
	}
	out.Message += fmt.Sprintf("; %s rejoined as a replica in %d ms", old, rec.RejoinMS)
	return out, nil
}

// undoSwitchover starts the old primary again as the primary after a
// switchover that could not complete before the promotion.
func (c *Cluster) undoSwitchover(ctx context.Context, old string, cause error) error {
	if err := c.update(func(st *state) { st.Promoting = ""; st.node(old).NeedsRejoin = false }); err != nil {
		return fmt.Errorf("%w; undo: %w", cause, err)
	}
	c.bump()
	if err := c.startNode(ctx, old); err != nil {
		return fmt.Errorf("%w; restart %s: %w", cause, old, err)
	}
	c.log.Warn("switchover undone", "primary", old, "cause", cause)
	return cause
}

// waitReplayedPast polls node until its replay LSN is past lsn.
func (c *Cluster) waitReplayedPast(ctx context.Context, node string, lsn LSN, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	var last probe
	for {
		last = c.probers[node].probe(ctx, c.opts.ProbeTimeout)
		if last.OK && last.Replay > lsn {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("%s did not replay past %s within %v (replayed %s)", node, lsn, limit, last.Replay)
		}
		select {
		case <-ctx.Done():
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// checkpointLSN returns the "Latest checkpoint location" of a stopped node:
// after a clean shutdown, its final WAL record.
func (c *Cluster) checkpointLSN(ctx context.Context, node string) (LSN, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(c.opts.BinDir, "pg_controldata"), "-D", c.Node(node).Config().DataDir)
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("pg_controldata %s: %w: %s", node, err, bytes.TrimSpace(out))
	}
	var state, loc string
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), ":")
		switch strings.TrimSpace(k) {
		case "Database cluster state":
			state = strings.TrimSpace(v)
		case "Latest checkpoint location":
			loc = strings.TrimSpace(v)
		}
	}
	if state != "shut down" {
		return 0, fmt.Errorf("%s did not shut down cleanly (state %q)", node, state)
	}
	return ParseLSN(loc)
}

// switchoverStreamWait bounds how long a switchover waits for its target to
// stream: a replica that was just started, or that reconnects, needs a moment.
const switchoverStreamWait = 15 * time.Second
