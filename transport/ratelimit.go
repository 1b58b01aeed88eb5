package transport

import (
	"sync"
	"time"
)

// tokenBucket admits Rate events a second with bursts of Burst.
type tokenBucket struct {
	rate, burst float64
	tokens      float64
	last        time.Time
}

func newTokenBucket(rate float64, burst int) *tokenBucket {
	return &tokenBucket{rate: rate, burst: float64(burst), tokens: float64(burst)}
}

// take spends one token if there is one.
func (b *tokenBucket) take(now time.Time) bool {
	if b.last.IsZero() {
		b.last = now
	}
	b.tokens = min(b.burst, b.tokens+now.Sub(b.last).Seconds()*b.rate)
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// userBuckets share one bucket among all of a user's connections on this
// node, and count connections per client IP.
type userBuckets struct {
	mu      sync.Mutex
	rate    float64
	burst   int
	buckets map[string]*sharedBucket
}

type sharedBucket struct {
	tokenBucket
	holders int
}

func newUserBuckets(rate float64, burst int) *userBuckets {
	return &userBuckets{rate: rate, burst: burst, buckets: map[string]*sharedBucket{}}
}

func (u *userBuckets) join(user string) {
	if u.rate <= 0 {
		return
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	b := u.buckets[user]
	if b == nil {
		b = &sharedBucket{tokenBucket: *newTokenBucket(u.rate, u.burst)}
		u.buckets[user] = b
	}
	b.holders++
}

func (u *userBuckets) leave(user string) {
	if u.rate <= 0 {
		return
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if b := u.buckets[user]; b != nil {
		if b.holders--; b.holders <= 0 {
			delete(u.buckets, user)
		}
	}
}

func (u *userBuckets) take(user string, now time.Time) bool {
	if u.rate <= 0 {
		return true
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	b := u.buckets[user]
	return b == nil || b.take(now)
}

// ipCounter limits open connections per client address.
type ipCounter struct {
	mu    sync.Mutex
	limit int
	open  map[string]int
}

func (c *ipCounter) acquire(ip string) bool {
	if c.limit <= 0 {
		return true
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.open[ip] >= c.limit {
		return false
	}
	c.open[ip]++
	return true
}

func (c *ipCounter) release(ip string) {
	if c.limit <= 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.open[ip]--; c.open[ip] <= 0 {
		delete(c.open, ip)
	}
}

// RateBudget is a token bucket that many goroutines may spend from.
type RateBudget struct {
	mu     sync.Mutex
	bucket *tokenBucket
}

// NewRateBudget allows rate a second with bursts of burst; a rate of 0
// allows everything.
func NewRateBudget(rate float64, burst int) *RateBudget {
	if rate <= 0 {
		return nil
	}
	return &RateBudget{bucket: newTokenBucket(rate, max(burst, 1))}
}

// Take spends one token if there is one (always, for a nil budget).
func (r *RateBudget) Take() bool {
	if r == nil {
		return true
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.bucket.take(time.Now())
}
