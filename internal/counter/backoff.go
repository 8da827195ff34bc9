package counter

import (
	"math/rand/v2"
	"time"
)

// Backoff computes retry delays that grow exponentially from Base and stop
// growing at Max, with jitter so that retrying processes spread out: the
// delay of attempt n is uniform in [d/2, d] where d = min(Max, Base*2^(n-1)).
type Backoff struct {
	Base time.Duration
	Max  time.Duration
	// Rand returns a number in [0, 1); nil means math/rand/v2.
	Rand func() float64
}

// Delay returns the wait before retry number attempt (1 for the first).
func (b Backoff) Delay(attempt int) time.Duration {
	d := b.Base
	for i := 1; i < attempt && d < b.Max; i++ {
		d *= 2
	}
	d = min(d, b.Max)
	r := rand.Float64
	if b.Rand != nil {
		r = b.Rand
	}
	return d/2 + time.Duration(r()*float64(d/2))
}
