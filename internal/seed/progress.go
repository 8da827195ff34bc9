package seed

import (
	"fmt"
	"io"
	"strings"
	"time"
)

// progressBar reports a load's progress: on a terminal one line redrawn
// with \r (a bar, the count, the rate and the time left); elsewhere a plain
// line about every 5%.
type progressBar struct {
	w            io.Writer
	terminal     bool
	from, target int
	start        time.Time
	nextPercent  int
	done         int
}

const barWidth = 30

func newProgress(w io.Writer, terminal bool, from, target int) *progressBar {
	p := &progressBar{w: w, terminal: terminal, from: from, target: target, start: time.Now(), done: from}
	p.nextPercent = p.percent() + 5
	return p
}

func (p *progressBar) percent() int {
	if p.target == 0 {
		return 100
	}
	return int(int64(p.done) * 100 / int64(p.target))
}

// rate returns rows per second of this run and the time left at that rate.
func (p *progressBar) rate() (float64, time.Duration) {
	elapsed := time.Since(p.start).Seconds()
	if elapsed <= 0 || p.done == p.from {
		return 0, 0
	}
	r := float64(p.done-p.from) / elapsed
	return r, time.Duration(float64(p.target-p.done) / r * float64(time.Second)).Round(time.Second)
}

func (p *progressBar) update(done int) {
	p.done = done
	r, eta := p.rate()
	if p.terminal {
		filled := barWidth * p.percent() / 100
		fmt.Fprintf(p.w, "\r[%s%s] %3d%% %d/%d users, %.0f/s, ETA %v   ",
			strings.Repeat("#", filled), strings.Repeat(".", barWidth-filled), p.percent(), done, p.target, r, eta)
		return
	}
	if p.percent() >= p.nextPercent || done == p.target {
		fmt.Fprintf(p.w, "loaded %d/%d users (%d%%), %.0f/s, ETA %v\n", done, p.target, p.percent(), r, eta)
		p.nextPercent = p.percent()/5*5 + 5
	}
}

// finish ends the bar's line and, when ok, prints the summary.
func (p *progressBar) finish(ok bool) {
	if p.terminal {
		fmt.Fprintln(p.w)
	}
	if ok {
		elapsed := time.Since(p.start)
		r, _ := p.rate()
		fmt.Fprintf(p.w, "loaded %d users in %v (%.0f/s); %d in total\n",
			p.done-p.from, elapsed.Round(time.Millisecond), r, p.done)
	}
}
