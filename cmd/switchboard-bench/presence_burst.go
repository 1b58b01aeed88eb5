package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lxzan/gws"
)

// presenceBurstConfig is one presence-burst run (issue #13): Users connect
// within Spread, each subscribes to Channel with presence events, reads the
// member list in pages of Limit and applies join and leave events, until
// every user knows every user or Timeout has passed since the first dial.
type presenceBurstConfig struct {
	URL     string
	Channel string
	Users   int
	Spread  time.Duration
	Limit   int
	Timeout time.Duration
	// Quiet: once every view is complete, frames are still counted until
	// none arrived for this long (pages asked for before completion).
	Quiet time.Duration
	// ServerPID, when set, has the server's CPU time measured over the run.
	ServerPID int
}

func defaultPresenceBurstConfig(url string) presenceBurstConfig {
	return presenceBurstConfig{URL: url, Channel: "bench:presence-burst", Users: 1000, Spread: time.Second,
		Limit: 100, Timeout: 30 * time.Second, Quiet: 500 * time.Millisecond}
}

// presenceUser is the user id of member i: zero-padded, so that the
// server's user-id order is the members' order.
func presenceUser(i int) string { return fmt.Sprintf("pb%04d", i) }

// presenceIndex is the member number of a user id, -1 for anyone else.
func presenceIndex(user string, users int) int {
	rest, ok := strings.CutPrefix(user, "pb")
	if !ok {
		return -1
	}
	i, err := strconv.Atoi(rest)
	if err != nil || i < 0 || i >= users || presenceUser(i) != user {
		return -1
	}
	return i
}

// presenceView is what one member believes the channel's members are.
// Events are applied in the order they arrive; a presence page only adds
// (the burst has no leaves, so a page can never bring back someone gone).
type presenceView struct {
	known     []bool
	size      int
	strangers int // events or pages naming a user that is not a member
}

func newPresenceView(users int) *presenceView { return &presenceView{known: make([]bool, users)} }

func (v *presenceView) join(user string) {
	i := presenceIndex(user, len(v.known))
	switch {
	case i < 0:
		v.strangers++
	case !v.known[i]:
		v.known[i] = true
		v.size++
	}
}

func (v *presenceView) leave(user string) {
	i := presenceIndex(user, len(v.known))
	switch {
	case i < 0:
		v.strangers++
	case v.known[i]:
		v.known[i] = false
		v.size--
	}
}

func (v *presenceView) complete() bool { return v.size == len(v.known) }

// missing names up to n members the view does not hold.
func (v *presenceView) missing(n int) []string {
	var users []string
	for i, k := range v.known {
		if !k && len(users) < n {
			users = append(users, presenceUser(i))
		}
	}
	return users
}

// presenceCounts are the frames one member received, by kind.
type presenceCounts struct {
	frames, bytes                     int64
	joins, leaves, batches, batchEvts int64
	pages, presenceBytes, pagesAsked  int64
	pageRetries                       int64
	errors                            map[string]int
	other                             int64
}

func (c *presenceCounts) add(o presenceCounts) {
	c.frames += o.frames
	c.bytes += o.bytes
	c.joins += o.joins
	c.leaves += o.leaves
	c.batches += o.batches
	c.batchEvts += o.batchEvts
	c.pages += o.pages
	c.presenceBytes += o.presenceBytes
	c.pagesAsked += o.pagesAsked
	c.pageRetries += o.pageRetries
	c.other += o.other
	for k, n := range o.errors {
		if c.errors == nil {
			c.errors = map[string]int{}
		}
		c.errors[k] += n
	}
}

// presenceMember is one user's connection. Its read loop is the only
// writer; the run reads it under mu.
type presenceMember struct {
	cfg   presenceBurstConfig
	conn  *gws.Conn
	start time.Time

	mu           sync.Mutex
	view         *presenceView
	counts       presenceCounts
	subscribedAt time.Duration // since start; 0: not yet
	completeAt   time.Duration // first moment the view held every member
	lastFrame    time.Time
	closeCode    int // 0: open; -1: dropped without a close frame
	closeReason  string
	closedByUs   atomic.Bool
	retries      int // presence pages refused so far
}

var (
	joinPrefix  = []byte(`{"type":"join"`)
	leavePrefix = []byte(`{"type":"leave"`)
	userField   = []byte(`"user":"`)
)

// frameUser reads the user of a join or leave frame without a full decode:
// before coalescing every member gets one such frame per member.
func frameUser(b []byte) (string, bool) {
	i := bytes.Index(b, userField)
	if i < 0 {
		return "", false
	}
	rest := b[i+len(userField):]
	j := bytes.IndexByte(rest, '"')
	if j < 0 || bytes.IndexByte(rest[:j], '\\') >= 0 {
		return "", false
	}
	return string(rest[:j]), true
}

func (p *presenceMember) OnOpen(*gws.Conn)             {}
func (p *presenceMember) OnPing(c *gws.Conn, b []byte) { _ = c.WritePong(b) }
func (p *presenceMember) OnPong(*gws.Conn, []byte)     {}
func (p *presenceMember) OnClose(_ *gws.Conn, err error) {
	if p.closedByUs.Load() {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	var ce *gws.CloseError
	if errors.As(err, &ce) {
		p.closeCode, p.closeReason = int(ce.Code), string(ce.Reason)
	} else {
		p.closeCode = -1
		if err != nil {
			p.closeReason = err.Error()
		}
	}
}

func (p *presenceMember) OnMessage(_ *gws.Conn, m *gws.Message) {
	defer m.Close()
	b := m.Bytes()
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	c := &p.counts
	c.frames++
	c.bytes += int64(len(b))
	p.lastFrame = now
	switch {
	case bytes.HasPrefix(b, joinPrefix):
		c.joins++
		c.presenceBytes += int64(len(b))
		if u, ok := frameUser(b); ok {
			p.view.join(u)
		}
	case bytes.HasPrefix(b, leavePrefix):
		c.leaves++
		c.presenceBytes += int64(len(b))
		if u, ok := frameUser(b); ok {
			p.view.leave(u)
		}
	default:
		p.decoded(b, now)
	}
	if p.completeAt == 0 && p.view.complete() {
		p.completeAt = now.Sub(p.start)
	}
}

// decoded handles the frames that are not join or leave; p.mu is held.
func (p *presenceMember) decoded(b []byte, now time.Time) {
	c := &p.counts
	var f struct {
		Type   string                  `json:"type"`
		Code   string                  `json:"code"`
		ID     string                  `json:"id"`
		More   bool                    `json:"more"`
		Users  []struct{ User string } `json:"users"`
		Events []struct {
			Type string `json:"type"`
			User string `json:"user"`
		} `json:"events"`
	}
	if err := json.Unmarshal(b, &f); err != nil {
		c.other++
		return
	}
	switch f.Type {
	case "subscribed":
		p.subscribedAt = now.Sub(p.start)
		p.askPresence("")
	case "presence_batch":
		c.batches++
		c.batchEvts += int64(len(f.Events))
		c.presenceBytes += int64(len(b))
		for _, e := range f.Events {
			switch e.Type {
			case "join":
				p.view.join(e.User)
			case "leave":
				p.view.leave(e.User)
			}
		}
	case "presence":
		c.pages++
		c.presenceBytes += int64(len(b))
		for _, u := range f.Users {
			p.view.join(u.User)
		}
		if f.More && len(f.Users) > 0 {
			p.askPresence(f.Users[len(f.Users)-1].User)
		}
	case "error":
		if c.errors == nil {
			c.errors = map[string]int{}
		}
		c.errors[f.Code]++
		// A well-behaved client asks again for a page refused for now.
		if after, ok := strings.CutPrefix(f.ID, "page:"); ok && (f.Code == "unavailable" || f.Code == "rate_limited") {
			c.pageRetries++
			delay := min(pageRetryDelay<<min(p.retries, 5), maxPageRetryDelay)
			p.retries++
			delay = delay/2 + time.Duration(rand.Int64N(int64(delay/2))) // jitter: refused members do not return together
			time.AfterFunc(delay, func() {
				p.mu.Lock()
				defer p.mu.Unlock()
				p.askPresence(after)
			})
		}
	case "welcome":
	default:
		c.other++
	}
}

// A member asks again for a page answered unavailable or rate_limited
// after pageRetryDelay, doubling with each refusal up to
// maxPageRetryDelay: an overloaded channel still works through the
// requests that timed out, so retrying at once only deepens its backlog.
const (
	pageRetryDelay    = 250 * time.Millisecond
	maxPageRetryDelay = 4 * time.Second
)

// askPresence requests the page of members after user ("": the first);
// the id names the page, so that a refusal can be retried. p.mu is held.
func (p *presenceMember) askPresence(after string) {
	req := map[string]any{"type": "presence", "channel": p.cfg.Channel, "limit": p.cfg.Limit, "id": "page:" + after}
	if after != "" {
		req["after"] = after
	}
	frame, _ := json.Marshal(req)
	p.counts.pagesAsked++
	conn := p.conn
	go func() { _ = conn.WriteMessage(gws.OpcodeText, frame) }() // not from the read loop: a full socket would stall it
}

// presenceBurstResult is what the members of one run saw.
type presenceBurstResult struct {
	Users, Dialed, Subscribed, Complete int
	DialErrors                          []string
	LastDial                            time.Duration // the last member's dial returned this long after the first began
	AllSubscribed                       time.Duration // 0: not all
	AllComplete                         time.Duration // 0: not all
	CompleteP50, CompleteP90            time.Duration
	Counts                              presenceCounts
	Strangers                           int
	Closes                              map[string]int // close code (or "dropped") → connections
	// Incomplete views at the end: how many, their smallest and largest size, a few of them.
	Incomplete         int
	IncompleteMin      int
	IncompleteMax      int
	IncompleteExamples []string
	TimedOut           bool
	// LastFrame: the newest frame any member received, since the first dial.
	LastFrame time.Duration
	// ServerCPU: CPU time (user and system) the server used during the
	// run; less moved by other processes on the core than wall time.
	ServerCPU time.Duration
}

func runPresenceBurst(cfg presenceBurstConfig) (presenceBurstResult, error) {
	res := presenceBurstResult{Users: cfg.Users, Closes: map[string]int{}}
	cpuBefore, _ := cpuTime(cfg.ServerPID)
	members := make([]*presenceMember, cfg.Users)
	start := time.Now()
	for i := range members {
		members[i] = &presenceMember{cfg: cfg, start: start, view: newPresenceView(cfg.Users)}
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var lastDial time.Duration
	for i, p := range members {
		wg.Add(1)
		go func() {
			defer wg.Done()
			time.Sleep(time.Until(start.Add(cfg.Spread * time.Duration(i) / time.Duration(cfg.Users))))
			conn, err := dial(cfg.URL, presenceUser(i), p)
			mu.Lock()
			defer mu.Unlock()
			lastDial = max(lastDial, time.Since(start))
			if err != nil {
				res.DialErrors = append(res.DialErrors, fmt.Sprintf("%s: %v", presenceUser(i), err))
				return
			}
			p.mu.Lock()
			p.conn = conn
			p.mu.Unlock()
			res.Dialed++
			_ = conn.WriteString(fmt.Sprintf(`{"type":"subscribe","channel":%q,"presence":true}`, cfg.Channel))
		}()
	}
	wg.Wait()
	res.LastDial = lastDial
	defer func() {
		for _, p := range members {
			p.closedByUs.Store(true)
			if p.conn != nil {
				_ = p.conn.NetConn().Close()
			}
		}
	}()

	deadline := start.Add(cfg.Timeout)
	var allCompleteAt time.Time
	for {
		complete, newest := 0, time.Time{}
		for _, p := range members {
			p.mu.Lock()
			if p.completeAt > 0 {
				complete++
			}
			if p.lastFrame.After(newest) {
				newest = p.lastFrame
			}
			p.mu.Unlock()
		}
		now := time.Now()
		if complete == cfg.Users && allCompleteAt.IsZero() {
			allCompleteAt = now
		}
		if !allCompleteAt.IsZero() && now.Sub(newest) >= cfg.Quiet {
			break
		}
		if now.After(deadline) {
			res.TimedOut = allCompleteAt.IsZero()
			break
		}
		time.Sleep(10 * time.Millisecond)
	}

	if cpuAfter, err := cpuTime(cfg.ServerPID); err == nil {
		res.ServerCPU = cpuAfter - cpuBefore
	}
	var completes []time.Duration
	var lastSubscribed time.Duration
	for i, p := range members {
		p.mu.Lock()
		res.Counts.add(p.counts)
		res.Strangers += p.view.strangers
		if p.subscribedAt > 0 {
			res.Subscribed++
			lastSubscribed = max(lastSubscribed, p.subscribedAt)
		}
		if p.completeAt > 0 {
			completes = append(completes, p.completeAt)
		}
		if !p.lastFrame.IsZero() {
			res.LastFrame = max(res.LastFrame, p.lastFrame.Sub(start))
		}
		switch {
		case p.closeCode == -1:
			res.Closes["dropped without close frame"]++
		case p.closeCode != 0:
			res.Closes[strconv.Itoa(p.closeCode)]++
		}
		if !p.view.complete() {
			if res.Incomplete == 0 || p.view.size < res.IncompleteMin {
				res.IncompleteMin = p.view.size
			}
			res.IncompleteMax = max(res.IncompleteMax, p.view.size)
			res.Incomplete++
			if len(res.IncompleteExamples) < 5 {
				res.IncompleteExamples = append(res.IncompleteExamples,
					fmt.Sprintf("%s knows %d, not %s (subscribed %v, close %d %s)", presenceUser(i), p.view.size,
						strings.Join(p.view.missing(3), ","), p.subscribedAt > 0, p.closeCode, p.closeReason))
			}
		}
		p.mu.Unlock()
	}
	res.Complete = len(completes)
	if res.Subscribed == cfg.Users {
		res.AllSubscribed = lastSubscribed
	}
	slices.Sort(completes)
	if n := len(completes); n > 0 {
		res.CompleteP50, res.CompleteP90 = completes[n*50/100], completes[n*90/100]
		if n == cfg.Users {
			res.AllComplete = completes[n-1]
		}
	}
	return res, nil
}

func printPresenceBurst(name string, cfg presenceBurstConfig, r presenceBurstResult) {
	ms := func(d time.Duration) string {
		if d == 0 {
			return "never"
		}
		return d.Round(time.Millisecond).String()
	}
	c := r.Counts
	closes := "none"
	if len(r.Closes) > 0 {
		var parts []string
		for code, n := range r.Closes {
			parts = append(parts, fmt.Sprintf("%s×%d", code, n))
		}
		slices.Sort(parts)
		closes = strings.Join(parts, ", ")
	}
	fmt.Printf("%s: %d users dialed within %s (%d dial errors), all subscribed after %s, every view complete after %s (p50 %s, p90 %s), %d/%d complete\n",
		name, r.Dialed, ms(r.LastDial), len(r.DialErrors), ms(r.AllSubscribed), ms(r.AllComplete), ms(r.CompleteP50), ms(r.CompleteP90), r.Complete, r.Users)
	fmt.Printf("| %s | figure | value |\n|---|---|---|\n", name)
	fmt.Printf("| %s | time until all %d know all %d | %s |\n", name, r.Users, r.Users, ms(r.AllComplete))
	fmt.Printf("| %s | frames received, all clients | %d (%.1f per client) |\n", name, c.frames, float64(c.frames)/float64(max(r.Users, 1)))
	fmt.Printf("| %s | presence frames: join / leave / presence_batch (events in them) / presence pages | %d / %d / %d (%d) / %d |\n",
		name, c.joins, c.leaves, c.batches, c.batchEvts, c.pages)
	fmt.Printf("| %s | presence requests sent (of them retries after unavailable or rate_limited) | %d (%d) |\n", name, c.pagesAsked, c.pageRetries)
	fmt.Printf("| %s | bytes received (payload), all / presence frames | %.1f MiB / %.1f MiB |\n", name, float64(c.bytes)/(1<<20), float64(c.presenceBytes)/(1<<20))
	fmt.Printf("| %s | connections closed (4009 / other) | %d / %s |\n", name, r.Closes["4009"], closes)
	if len(c.errors) > 0 {
		fmt.Printf("| %s | error frames by code | %v |\n", name, c.errors)
	}
	if r.Strangers > 0 || c.other > 0 {
		fmt.Printf("| %s | events naming non-members / unrecognised frames | %d / %d |\n", name, r.Strangers, c.other)
	}
	fmt.Printf("| %s | last frame received | %s after the first dial |\n", name, ms(r.LastFrame))
	if r.ServerCPU > 0 {
		fmt.Printf("| %s | server CPU time (user+system) | %s |\n", name, ms(r.ServerCPU))
	}
	if r.Incomplete > 0 {
		fmt.Printf("%s: INCOMPLETE after %s: %d views (sizes %d–%d of %d), e.g. %s\n", name, cfg.Timeout, r.Incomplete,
			r.IncompleteMin, r.IncompleteMax, r.Users, strings.Join(r.IncompleteExamples, "; "))
	}
	for i, e := range r.DialErrors {
		if i == 5 {
			fmt.Printf("%s: … %d more dial errors\n", name, len(r.DialErrors)-5)
			break
		}
		fmt.Printf("%s: dial error %s\n", name, e)
	}
}

// cpuTime is the user and system CPU time a process has used so far.
func cpuTime(pid int) (time.Duration, error) {
	if pid == 0 {
		return 0, fmt.Errorf("no pid")
	}
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// Fields after the command (which may hold spaces) start at state (3rd);
	// utime and stime are the 14th and 15th, in clock ticks (100 a second).
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, fmt.Errorf("unreadable /proc/%d/stat", pid)
	}
	fields := strings.Fields(string(stat[i+1:]))
	if len(fields) < 13 {
		return 0, fmt.Errorf("unreadable /proc/%d/stat", pid)
	}
	utime, err1 := strconv.ParseInt(fields[11], 10, 64)
	stime, err2 := strconv.ParseInt(fields[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	return time.Duration(utime+stime) * 10 * time.Millisecond, nil
}
