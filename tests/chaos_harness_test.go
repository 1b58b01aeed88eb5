package tests

// Helpers for the chaos tests (chaos_test.go): broker processes frozen and
// thawed, nodes started again on the addresses they had, and clients that
// keep every frame they receive, so a test can send while traffic flows
// and judge a whole stream afterwards.

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lxzan/gws"

	"github.com/switchboard/switchboard/cluster"
)

// ---- processes ----

func (s *server) hasExited() bool {
	select {
	case <-s.exited:
		return true
	default:
		return false
	}
}

// readyz asks /readyz within timeout; a paused node answers nothing and a
// node that has exited refuses, both an error here.
func (s *server) readyz(timeout time.Duration) (int, error) {
	client := http.Client{Timeout: timeout}
	resp, err := client.Get("http://" + s.addr + "/readyz")
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// readyzUntilExit polls /readyz every 20 ms until the process exits or d
// passes, and counts the answers by status ("no answer" for none).
func (s *server) readyzUntilExit(d time.Duration) map[string]int {
	answers := map[string]int{}
	for start := time.Now(); !s.hasExited() && time.Since(start) < d; time.Sleep(20 * time.Millisecond) {
		if status, err := s.readyz(time.Second); err != nil {
			answers["no answer"]++
		} else {
			answers[fmt.Sprint(status)]++
		}
	}
	return answers
}

// startPinnedNode starts a cluster node on a cluster port chosen here, so
// that it can be started again on the same --addr and --node-addr, as a
// supervisor restarting it in place would.
func startPinnedNode(t testing.TB, etcd *cluster.EmbeddedEtcd, args ...string) (*server, string) {
	t.Helper()
	nodeAddr := freeAddr(t)
	return startNode(t, etcd, append(args, "--node-addr", nodeAddr)...), nodeAddr
}

// restartInPlace starts a fresh node on the addresses of one that has
// exited: clients reconnect to the address they knew.
func restartInPlace(t testing.TB, etcd *cluster.EmbeddedEtcd, old *server, nodeAddr string, args ...string) *server {
	t.Helper()
	if !old.hasExited() {
		t.Fatalf("restart in place: %s is still running", old.addr)
	}
	return startNode(t, etcd, append(args, "--addr", old.addr, "--node-addr", nodeAddr)...)
}

// members reads switchboard_cluster_members of each node.
func members(t testing.TB, nodes []*server) []float64 {
	t.Helper()
	out := make([]float64, len(nodes))
	for i, n := range nodes {
		out[i] = n.metric(t, "switchboard_cluster_members")
	}
	return out
}

// ownerOf publishes one probe to channel through p and returns the index of
// the node that sequenced it (its switchboard_publications_total grew): the
// node that owns the channel. Nothing else may publish meanwhile.
func ownerOf(t testing.TB, nodes []*server, p *peer, channel string) int {
	t.Helper()
	before := make([]float64, len(nodes))
	for i, n := range nodes {
		before[i] = n.metric(t, "switchboard_publications_total")
	}
	p.mustPublish(t, channel, "probe")
	for i, n := range nodes {
		if n.metric(t, "switchboard_publications_total") > before[i] {
			return i
		}
	}
	t.Fatalf("no node counted the probe publication of %s", channel)
	return -1
}

// channelsOwnedBy probes prefix0, prefix1, … and returns the first n
// channels that nodes[owner] owns.
func channelsOwnedBy(t testing.TB, nodes []*server, p *peer, prefix string, owner, n int) []string {
	t.Helper()
	var found []string
	for i := 0; len(found) < n; i++ {
		if i == 100 {
			t.Fatalf("only %d of the first 100 channels %s* are owned by %s", len(found), prefix, nodes[owner].addr)
		}
		channel := fmt.Sprintf("%s%d", prefix, i)
		if ownerOf(t, nodes, p, channel) == owner {
			found = append(found, channel)
		}
	}
	return found
}

// ---- clients that keep every frame ----

// frame is one frame a peer received.
type frame struct {
	at time.Time
	m  map[string]any
}

func (f frame) typ() string     { s, _ := f.m["type"].(string); return s }
func (f frame) channel() string { s, _ := f.m["channel"].(string); return s }
func (f frame) epoch() string   { s, _ := f.m["epoch"].(string); return s }
func (f frame) data() string    { s, _ := f.m["data"].(string); return s }
func (f frame) code() string    { s, _ := f.m["code"].(string); return s }
func (f frame) offset() int64   { n, _ := f.m["offset"].(float64); return int64(n) }

func (f frame) String() string {
	m := map[string]any{}
	for k, v := range f.m {
		if s, ok := v.(string); ok && len(s) > 80 {
			v = s[:40] + fmt.Sprintf("…(%d chars)", len(s))
		}
		if l, ok := v.([]any); ok && len(l) > 5 {
			v = fmt.Sprintf("[%d items]", len(l))
		}
		m[k] = v
	}
	raw, _ := json.Marshal(m)
	return string(raw)
}

// peer is a client whose frames are all kept, in arrival order, by a
// reader of its own. Its requests carry ids "<user>-N" and their replies
// are found by id.
type peer struct {
	*client
	user string
	node *server

	writeMu sync.Mutex
	ids     atomic.Int64

	mu      sync.Mutex
	log     []frame
	byID    map[string]frame
	waiting map[string]chan frame
	done    chan struct{} // the connection closed and every frame is kept
}

// join connects user to s, failing the test if it cannot.
func join(t testing.TB, s *server, user string) *peer {
	t.Helper()
	return keep(s.connect(t, user), s, user)
}

// refused is a connection the broker turned away.
type refused struct {
	code  uint16 // close code; 0 when the socket just dropped
	frame string // what it said first, if anything
}

func (r *refused) Error() string { return fmt.Sprintf("closed with %d (%s)", r.code, r.frame) }

// tryJoin connects user to s without failing the test: for clients that
// retry, and for goroutines. A connection refused by the broker is a
// *refused error.
func tryJoin(t testing.TB, s *server, user string) (*peer, error) {
	c := &client{t: t, frames: make(chan []byte, 20000), closed: make(chan struct{})}
	conn, resp, err := gws.NewClient(clientEvents{c}, &gws.ClientOption{
		Addr:                s.wsURL("user=" + user),
		ReadMaxPayloadSize:  16 << 20,
		WriteMaxPayloadSize: 16 << 20,
		HandshakeTimeout:    3 * time.Second,
	})
	if err != nil {
		if resp != nil {
			return nil, fmt.Errorf("dial %s: %v (HTTP %d)", s.addr, err, resp.StatusCode)
		}
		return nil, fmt.Errorf("dial %s: %v", s.addr, err)
	}
	c.conn = conn
	go conn.ReadLoop()
	t.Cleanup(func() { _ = conn.NetConn().Close() })
	select {
	case raw := <-c.frames:
		m := decode(raw)
		if m["type"] == "welcome" {
			c.welcome = m
			return keep(c, s, user), nil
		}
		select {
		case <-c.closed:
		case <-time.After(3 * time.Second):
		}
		c.closeMu.Lock()
		defer c.closeMu.Unlock()
		return nil, &refused{code: c.code, frame: string(raw)}
	case <-c.closed:
		c.closeMu.Lock()
		defer c.closeMu.Unlock()
		return nil, &refused{code: c.code}
	case <-time.After(5 * time.Second):
		_ = conn.NetConn().Close()
		return nil, fmt.Errorf("no welcome from %s within 5s", s.addr)
	}
}

// rejoin connects user to s, retrying every 100 ms until welcomed or d has
// passed; it returns the connection (nil if none) and the failed attempts.
func rejoin(t testing.TB, s *server, user string, d time.Duration) (*peer, []error) {
	deadline := time.Now().Add(d)
	var failures []error
	for {
		p, err := tryJoin(t, s, user)
		if err == nil {
			return p, failures
		}
		failures = append(failures, err)
		if time.Now().After(deadline) {
			return nil, failures
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// keep starts the reader that keeps every frame c receives.
func keep(c *client, s *server, user string) *peer {
	p := &peer{client: c, user: user, node: s, byID: map[string]frame{}, waiting: map[string]chan frame{}, done: make(chan struct{})}
	go func() {
		defer close(p.done)
		for {
			select {
			case raw := <-c.frames:
				p.add(raw)
			case <-c.closed:
				for {
					select {
					case raw := <-c.frames:
						p.add(raw)
					default:
						return
					}
				}
			}
		}
	}()
	return p
}

func (p *peer) add(raw []byte) {
	f := frame{at: time.Now(), m: decode(raw)}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.log = append(p.log, f)
	if id, ok := f.m["id"].(string); ok {
		p.byID[id] = f
		if w := p.waiting[id]; w != nil {
			delete(p.waiting, id)
			w <- f
		}
	}
}

// write sends v as one text frame.
func (p *peer) write(v map[string]any) error {
	raw, _ := json.Marshal(v)
	p.writeMu.Lock()
	defer p.writeMu.Unlock()
	return p.conn.WriteString(string(raw))
}

// ask sends v with a fresh id, without waiting for the answer.
func (p *peer) ask(v map[string]any) (string, error) {
	id := fmt.Sprintf("%s-%d", p.user, p.ids.Add(1))
	v["id"] = id
	return id, p.write(v)
}

// reply waits up to d for the frame that answers id.
func (p *peer) reply(id string, d time.Duration) (frame, bool) {
	p.mu.Lock()
	if f, ok := p.byID[id]; ok {
		p.mu.Unlock()
		return f, true
	}
	w := make(chan frame, 1)
	p.waiting[id] = w
	p.mu.Unlock()
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case f := <-w:
		return f, true
	case <-p.done:
	case <-timer.C:
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.waiting, id)
	f, ok := p.byID[id]
	return f, ok
}

// call sends v and returns its answer, failing the test without one within d.
func (p *peer) call(t testing.TB, v map[string]any, d time.Duration) frame {
	t.Helper()
	id, err := p.ask(v)
	if err != nil {
		t.Fatalf("%s: send %v: %v", p.user, v["type"], err)
	}
	f, ok := p.reply(id, d)
	switch {
	case !ok && p.isClosed():
		t.Fatalf("%s on %s: %s before the answer to %v", p.user, p.node.addr, p.state(), v["type"])
	case !ok:
		t.Fatalf("%s on %s: no answer to %v within %s", p.user, p.node.addr, v["type"], d)
	}
	return f
}

// publish publishes data to channel and waits up to d for the answer: the
// offset when acknowledged, else the error code, "timeout" or "closed".
func (p *peer) publish(channel string, data any, d time.Duration) (int64, string) {
	id, err := p.ask(map[string]any{"type": "message", "channel": channel, "data": data})
	if err != nil {
		return 0, "closed"
	}
	f, ok := p.reply(id, d)
	switch {
	case !ok && p.isClosed():
		return 0, "closed"
	case !ok:
		return 0, "timeout"
	case f.typ() == "published":
		return f.offset(), ""
	case f.code() != "":
		return 0, f.code()
	default:
		return 0, f.String()
	}
}

// publishAsync sends a publication without waiting for its answer and
// returns its id, for pipelining.
func (p *peer) publishAsync(t testing.TB, channel string, data any) string {
	t.Helper()
	id, err := p.ask(map[string]any{"type": "message", "channel": channel, "data": data})
	if err != nil {
		t.Fatalf("%s publishing to %s: %v", p.user, channel, err)
	}
	return id
}

// mustPublish publishes and fails the test unless it is acknowledged.
func (p *peer) mustPublish(t testing.TB, channel string, data any) int64 {
	t.Helper()
	offset, code := p.publish(channel, data, waitTimeout)
	if code != "" {
		t.Fatalf("%s publishing to %s via %s: %s", p.user, channel, p.node.addr, code)
	}
	return offset
}

// publishBy publishes, retrying while the answer is unavailable, until
// deadline; it fails the test if no attempt is acknowledged.
func (p *peer) publishBy(t testing.TB, channel string, data any, deadline time.Time) (offset int64, retries int) {
	t.Helper()
	for {
		offset, code := p.publish(channel, data, time.Until(deadline))
		if code == "" {
			return offset, retries
		}
		if code != "unavailable" || time.Now().After(deadline) {
			t.Fatalf("%s publishing to %s via %s: %s (after %d retries)", p.user, channel, p.node.addr, code, retries)
		}
		retries++
		time.Sleep(50 * time.Millisecond)
	}
}

// subscribe joins channels, all requests at once, and returns each
// channel's subscribed frame; extra adds fields such as "presence".
func (p *peer) subscribe(t testing.TB, extra map[string]any, channels ...string) map[string]frame {
	t.Helper()
	ids := make([]string, len(channels))
	for i, ch := range channels {
		v := map[string]any{"type": "subscribe", "channel": ch}
		for k, x := range extra {
			v[k] = x
		}
		id, err := p.ask(v)
		if err != nil {
			t.Fatalf("%s: subscribe %s: %v", p.user, ch, err)
		}
		ids[i] = id
	}
	out := map[string]frame{}
	for i, id := range ids {
		f, ok := p.reply(id, waitTimeout)
		if !ok || f.typ() != "subscribed" {
			t.Fatalf("%s on %s: subscribe %s answered %v (%s)", p.user, p.node.addr, channels[i], f, p.state())
		}
		out[channels[i]] = f
	}
	return out
}

// frames returns the frames kept so far of type typ ("" any) on channel
// ("" any), in arrival order.
func (p *peer) frames(typ, channel string) []frame {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []frame
	for _, f := range p.log {
		if (typ == "" || f.typ() == typ) && (channel == "" || f.channel() == channel) {
			out = append(out, f)
		}
	}
	return out
}

// messages returns the message frames on channel, in arrival order.
func (p *peer) messages(channel string) []frame { return p.frames("message", channel) }

// find returns the first message with data on channel.
func (p *peer) find(channel, data string) (frame, bool) {
	for _, f := range p.messages(channel) {
		if f.data() == data {
			return f, true
		}
	}
	return frame{}, false
}

// index returns the first message of each (channel, data), keyed
// channel + "\x00" + data: for looking up thousands of publications.
func (p *peer) index() map[string]frame {
	out := map[string]frame{}
	for _, f := range p.frames("message", "") {
		key := f.channel() + "\x00" + f.data()
		if _, seen := out[key]; !seen {
			out[key] = f
		}
	}
	return out
}

// stream checks p's messages on channel since its subscription (sub):
// each offset must follow the one before, else a problem. It returns them
// as "offset=data" and the epochs they and sub carry, in order of name.
func (p *peer) stream(channel string, sub frame, probs *problems) (sequence, epochs []string) {
	seen := map[string]bool{sub.epoch(): true}
	prev := sub.offset()
	for _, m := range p.messages(channel) {
		seen[m.epoch()] = true
		if m.offset() != prev+1 {
			probs.add("offset not one after the previous (a gap, a duplicate or a reorder)",
				"%s on %s, %s: offset %d after %d (%s)", p.user, p.node.addr, channel, m.offset(), prev, m.data())
		}
		prev = m.offset()
		sequence = append(sequence, fmt.Sprintf("%d=%s", m.offset(), m.data()))
	}
	return sequence, sortedKeys(seen)
}

func (p *peer) isClosed() bool {
	select {
	case <-p.client.closed:
		return true
	default:
		return false
	}
}

// closeCode waits up to d for the connection to close and returns the code
// (0 when the socket just dropped).
func (p *peer) closeCode(d time.Duration) (uint16, bool) {
	select {
	case <-p.client.closed:
	case <-time.After(d):
		return 0, false
	}
	p.closeMu.Lock()
	defer p.closeMu.Unlock()
	return p.code, true
}

// state describes the connection for failure messages.
func (p *peer) state() string {
	if !p.isClosed() {
		return "connection open"
	}
	code, _ := p.closeCode(0)
	return fmt.Sprintf("connection closed with %d", code)
}

// ---- waiting and counting ----

// allReceived reports whether every peer has, on every channel, a message
// with each data that wants names for that channel.
func allReceived(peers []*peer, channels []string, wants func(channel string) []string) bool {
	for _, p := range peers {
		index := p.index()
		for _, ch := range channels {
			for _, data := range wants(ch) {
				if _, ok := index[ch+"\x00"+data]; !ok {
					return false
				}
			}
		}
	}
	return true
}

// within polls cond every 20 ms until it holds (true) or d passes (false).
func within(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true
}

// names returns prefix:0 … prefix:n-1.
func names(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s:%d", prefix, i)
	}
	return out
}

// payload is a string of exactly size characters starting with tag.
func payload(tag string, size int) string {
	return tag + strings.Repeat("x", size-len(tag))
}

// problems collects what went wrong and reports a few of each kind.
type problems struct {
	mu    sync.Mutex
	kinds []string
	count map[string]int
	some  map[string][]string
}

func (p *problems) add(kind, format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.count == nil {
		p.count, p.some = map[string]int{}, map[string][]string{}
	}
	if p.count[kind] == 0 {
		p.kinds = append(p.kinds, kind)
	}
	p.count[kind]++
	if len(p.some[kind]) < 4 {
		p.some[kind] = append(p.some[kind], fmt.Sprintf(format, args...))
	}
}

func (p *problems) total() int {
	n := 0
	for _, c := range p.count {
		n += c
	}
	return n
}

// report fails the test with every kind of problem, a few examples each.
func (p *problems) report(t testing.TB) {
	t.Helper()
	if p.total() == 0 {
		return
	}
	var b strings.Builder
	for _, kind := range p.kinds {
		fmt.Fprintf(&b, "\n%d× %s, e.g.\n    %s", p.count[kind], kind, strings.Join(p.some[kind], "\n    "))
	}
	t.Errorf("%d problems:%s", p.total(), b.String())
}

// ---- load ----

// publication is one publication a load generator made.
type publication struct {
	channel string
	data    string
	offset  int64 // from the acknowledgement
	sent    time.Time
}

// load publishes round channels from its publishers, each one publication
// at a time with a pause between, until halted or limit each; it keeps every
// acknowledged publication and counts the rest.
type load struct {
	stop atomic.Bool
	wg   sync.WaitGroup

	mu          sync.Mutex
	acked       []publication
	sentAt      map[string]time.Time // data → when it was sent
	unavailable int
	unknown     int      // outcome_unknown: in flight to a node that died; not published again
	lost        []string // answered neither published nor unavailable within 5s
	slow        int      // answered after more than 100 ms
	slowest     time.Duration
}

func startLoad(pubs []*peer, channels []string, pause time.Duration, limit int) *load {
	l := &load{sentAt: map[string]time.Time{}}
	for k, p := range pubs {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for i := 0; i < limit && !l.stop.Load(); i++ {
				channel := channels[(i+k*7)%len(channels)]
				data := fmt.Sprintf("%s#%d", p.user, i)
				sent := time.Now()
				l.mu.Lock()
				l.sentAt[data] = sent
				l.mu.Unlock()
				offset, code := p.publish(channel, data, 5*time.Second) // the broker answers within --request-timeout (2s)
				took := time.Since(sent)
				l.mu.Lock()
				l.slowest = max(l.slowest, took)
				if took > 100*time.Millisecond {
					l.slow++
				}
				switch code {
				case "":
					l.acked = append(l.acked, publication{channel: channel, data: data, offset: offset, sent: sent})
				case "unavailable":
					l.unavailable++
				case "outcome_unknown":
					l.unknown++
				default:
					l.lost = append(l.lost, data+": "+code)
				}
				l.mu.Unlock()
				if code == "closed" {
					return
				}
				time.Sleep(pause)
			}
		}()
	}
	return l
}

// halt stops the publishers and waits for their last answers.
func (l *load) halt() {
	l.stop.Store(true)
	l.wg.Wait()
}

func (l *load) ackedCount() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.acked)
}

func (l *load) ackedList() []publication {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]publication(nil), l.acked...)
}

// unanswered reports each publication answered neither published nor
// unavailable (no answer within 5s, another error, or the connection lost).
func (l *load) unanswered(probs *problems) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, lost := range l.lost {
		probs.add("publication answered neither published nor unavailable", "%s", lost)
	}
	return len(l.lost)
}

// latency describes the slow answers.
func (l *load) latency() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return fmt.Sprintf("%d answered after more than 100ms, the slowest after %s", l.slow, l.slowest.Round(time.Millisecond))
}

func (l *load) sent(data string) (time.Time, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	at, ok := l.sentAt[data]
	return at, ok
}

// sortedKeys returns m's keys in order.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
