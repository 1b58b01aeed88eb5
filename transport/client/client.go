// Package client is the Go client of Switchboard, with the semantics of the
// browser client: requests correlated by id, automatic reconnection with
// exponential backoff and jitter, re-authentication, re-subscription with
// recovery from the last offset seen, and a bounded queue of publications
// made while disconnected.
package client

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/lxzan/gws"
)

// Options configure a Client. URL is required.
type Options struct {
	URL string // ws://host:port/ws
	// Token is a JWT sent as TokenMethod says: "protocol" (default),
	// "query" or "frame". GetToken, when set, supplies a fresh one before
	// every reconnect.
	Token       string
	TokenMethod string
	GetToken    func(ctx context.Context) (string, error)
	// RefreshBeforeExpiry: how long before the token's exp GetToken is
	// asked for a fresh one, sent in an auth frame (default 30s).
	RefreshBeforeExpiry time.Duration
	User                string // development mode only: ?user=

	BackoffBase    time.Duration // default 1s
	BackoffCap     time.Duration // default 30s
	MaxAttempts    int           // reconnect attempts before giving up; 0: forever
	NoReconnect    bool
	PingInterval   time.Duration // default 25s
	RequestTimeout time.Duration // default 10s
	OfflineQueue   int           // publications kept while disconnected; 0: rejected

	// OnMessage receives publications of subscribed channels, in order,
	// without duplicates across reconnects.
	OnMessage func(Message)
	// OnEvent receives everything else: join, leave, direct, and the
	// lifecycle events connected, disconnected, reconnecting,
	// reconnect_failed, recovery_failed and subscription_failed.
	OnEvent func(Event)
}

// Message is one publication. In a History page, Type "skip" marks a
// publication that excluded this user: its offset, without data (the
// client consumes those itself and never hands them to OnMessage).
type Message struct {
	Type      string          `json:"type"`
	Channel   string          `json:"channel"`
	From      string          `json:"from"`
	Data      json.RawMessage `json:"data"`
	Offset    uint64          `json:"offset"`
	Epoch     string          `json:"epoch"`
	Timestamp int64           `json:"timestamp"`
}

// Event is a frame or a lifecycle event; Frame holds the raw JSON if any.
type Event struct {
	Type  string
	Frame json.RawMessage
	Err   error
}

// Error is a refusal from the broker.
type Error struct {
	Code    string `json:"code"`
	Message string `json:"error"`
	Offset  uint64 `json:"offset"` // offset_mismatch: where the channel is
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

// ErrDisconnected is returned for requests made while not connected.
var ErrDisconnected = errors.New("switchboard: not connected")

// ErrClosed is returned after Close or once reconnecting gave up.
var ErrClosed = errors.New("switchboard: client closed")

// Client is a connection to a broker that heals itself.
type Client struct {
	opts Options

	mu        sync.Mutex
	conn      *gws.Conn
	connected bool
	closed    bool
	user      string
	nextID    int64
	pending   map[int64]chan reply
	channels  map[string]*subscription
	queue     []queued
	welcome   chan error
	stop      chan struct{}
}

type subscription struct {
	presence bool
	info     json.RawMessage
	offset   uint64
	epoch    string
	filling  bool      // a gap is being filled from history
	waiting  []Message // live messages that arrived meanwhile
}

type queued struct {
	frame map[string]any
	done  chan reply
}

type reply struct {
	raw json.RawMessage
	err error
}

// Dial connects and waits for the broker's welcome.
func Dial(ctx context.Context, opts Options) (*Client, error) {
	if opts.BackoffBase <= 0 {
		opts.BackoffBase = time.Second
	}
	if opts.BackoffCap <= 0 {
		opts.BackoffCap = 30 * time.Second
	}
	if opts.PingInterval <= 0 {
		opts.PingInterval = 25 * time.Second
	}
	if opts.RequestTimeout <= 0 {
		opts.RequestTimeout = 10 * time.Second
	}
	if opts.TokenMethod == "" {
		opts.TokenMethod = "protocol"
	}
	if opts.RefreshBeforeExpiry <= 0 {
		opts.RefreshBeforeExpiry = 30 * time.Second
	}
	c := &Client{opts: opts, pending: map[int64]chan reply{}, channels: map[string]*subscription{}, stop: make(chan struct{})}
	if err := c.open(ctx, opts.Token); err != nil {
		return nil, err
	}
	go c.keepAlive()
	if opts.GetToken != nil {
		go c.refreshTokens(opts.Token)
	}
	return c, nil
}

// refreshTokens asks GetToken for a fresh token shortly before each one
// expires and hands it to the broker in an auth frame.
func (c *Client) refreshTokens(token string) {
	for {
		exp, ok := TokenExpiry(token)
		if !ok {
			return
		}
		select {
		case <-c.stop:
			return
		case <-time.After(time.Until(exp) - c.opts.RefreshBeforeExpiry):
		}
		ctx, cancel := context.WithTimeout(context.Background(), c.opts.RequestTimeout)
		fresh, err := c.opts.GetToken(ctx)
		if err == nil {
			_, err = c.Request(ctx, map[string]any{"type": "auth", "token": fresh})
		}
		cancel()
		if err != nil {
			c.event(Event{Type: "error", Err: fmt.Errorf("token refresh: %w", err)})
			select {
			case <-c.stop:
				return
			case <-time.After(time.Second):
			}
			continue
		}
		token = fresh
	}
}

// TokenExpiry reads a JWT's exp claim without verifying it.
func TokenExpiry(token string) (time.Time, bool) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return time.Time{}, false
	}
	payload, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return time.Time{}, false
	}
	var claims struct {
		Exp float64 `json:"exp"`
	}
	if json.Unmarshal(payload, &claims) != nil || claims.Exp == 0 {
		return time.Time{}, false
	}
	return time.Unix(int64(claims.Exp), 0), true
}

// User is the user id the broker knows this client as.
func (c *Client) User() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.user
}

// open dials once and waits for the welcome.
func (c *Client) open(ctx context.Context, token string) error {
	u, err := url.Parse(c.opts.URL)
	if err != nil {
		return fmt.Errorf("switchboard: url: %w", err)
	}
	q := u.Query()
	if c.opts.User != "" {
		q.Set("user", c.opts.User)
	}
	header := http.Header{}
	protocols := Subprotocol
	switch {
	case token != "" && c.opts.TokenMethod == "query":
		q.Set("token", token)
	case token != "" && c.opts.TokenMethod == "protocol":
		protocols += ", auth." + token
	}
	header.Set("Sec-WebSocket-Protocol", protocols)
	u.RawQuery = q.Encode()
	welcome := make(chan error, 1)
	c.mu.Lock()
	c.welcome = welcome
	c.mu.Unlock()
	conn, _, err := gws.NewClient(&events{c}, &gws.ClientOption{Addr: u.String(), RequestHeader: header, ReadMaxPayloadSize: 64 << 20})
	if err != nil {
		return fmt.Errorf("switchboard: dial %s: %w", c.opts.URL, err)
	}
	c.mu.Lock()
	c.conn = conn
	c.mu.Unlock()
	go conn.ReadLoop()
	if token != "" && c.opts.TokenMethod == "frame" {
		raw, _ := json.Marshal(map[string]any{"type": "auth", "token": token})
		_ = conn.WriteMessage(gws.OpcodeText, raw)
	}
	select {
	case err := <-welcome:
		return err
	case <-ctx.Done():
		_ = conn.NetConn().Close()
		return ctx.Err()
	}
}

// Subprotocol is offered on every connection.
const Subprotocol = "switchboard.v1"

type events struct{ c *Client }

func (e *events) OnOpen(*gws.Conn)         {}
func (e *events) OnPing(*gws.Conn, []byte) {}
func (e *events) OnPong(*gws.Conn, []byte) {}

func (e *events) OnMessage(socket *gws.Conn, m *gws.Message) {
	defer m.Close()
	e.c.receive(bytes.Clone(m.Bytes()))
}

func (e *events) OnClose(socket *gws.Conn, err error) {
	c := e.c
	code := uint16(1006)
	var ce *gws.CloseError
	if errors.As(err, &ce) {
		code = ce.Code
	}
	c.mu.Lock()
	if c.conn != socket {
		c.mu.Unlock()
		return
	}
	wasConnected := c.connected
	c.connected = false
	for id, ch := range c.pending {
		ch <- reply{err: ErrDisconnected}
		delete(c.pending, id)
	}
	welcome := c.welcome
	c.welcome = nil
	closed := c.closed
	c.mu.Unlock()
	if welcome != nil {
		welcome <- fmt.Errorf("switchboard: closed with %d before the welcome", code)
	}
	if wasConnected {
		c.event(Event{Type: "disconnected", Frame: json.RawMessage(fmt.Sprintf(`{"code":%d}`, code))})
	}
	final := code == 1000 || code == 4010 || code == 4029 || (code == 4001 && c.opts.GetToken == nil)
	if closed || !wasConnected || c.opts.NoReconnect || final {
		if wasConnected && !closed {
			c.shutdown() // the broker ended it for good: no reconnect
		}
		return
	}
	go c.reconnect()
}

func (c *Client) receive(raw []byte) {
	var head struct {
		Type string          `json:"type"`
		ID   json.RawMessage `json:"id"`
		User string          `json:"user"`
	}
	if json.Unmarshal(raw, &head) != nil {
		return
	}
	if len(head.ID) > 0 {
		var id int64
		if json.Unmarshal(head.ID, &id) == nil {
			c.mu.Lock()
			ch, ok := c.pending[id]
			delete(c.pending, id)
			c.mu.Unlock()
			if ok {
				if head.Type == "error" {
					e := &Error{}
					_ = json.Unmarshal(raw, e)
					ch <- reply{err: e}
				} else {
					if head.Type == "subscribed" {
						c.subscribed(raw)
					}
					ch <- reply{raw: raw}
				}
				return
			}
		}
	}
	switch head.Type {
	case "welcome":
		c.mu.Lock()
		c.connected, c.user = true, head.User
		welcome := c.welcome
		c.welcome = nil
		c.mu.Unlock()
		if welcome != nil {
			welcome <- nil
		}
	case "message", "skip":
		var m Message
		if json.Unmarshal(raw, &m) != nil {
			return
		}
		c.live(m)
	case "gap":
		c.gap(raw)
	case "unsubscribed":
		// The server ended it (a refreshed token no longer allows it): not
		// to be subscribed again after a reconnect.
		var u struct{ Channel, Code string }
		if json.Unmarshal(raw, &u) == nil && u.Code != "" {
			c.mu.Lock()
			delete(c.channels, u.Channel)
			c.mu.Unlock()
		}
		c.event(Event{Type: head.Type, Frame: raw})
	case "error":
		e := &Error{}
		_ = json.Unmarshal(raw, e)
		c.event(Event{Type: "error", Frame: raw, Err: e})
	default:
		c.event(Event{Type: head.Type, Frame: raw})
	}
}

// live takes a live (or recovered) message or skip. While a gap is being
// filled it waits its turn; an offset jump the server did not announce is
// filled like a gap, before it is handed on.
func (c *Client) live(m Message) {
	c.mu.Lock()
	s := c.channels[m.Channel]
	if s != nil && !s.filling && s.epoch == m.Epoch && m.Offset > s.offset+1 {
		s.filling = true
		go c.fill(s, m.Channel, m.Epoch, s.offset, m.Offset-1)
	}
	if s != nil && s.filling {
		s.waiting = append(s.waiting, m) // handed on once the missed ones are
		c.mu.Unlock()
		return
	}
	c.mu.Unlock()
	c.deliver(m)
}

// deliver hands a live or recovered message on, in order, once. A skip (a
// publication that excluded this user) only moves the offset on.
func (c *Client) deliver(m Message) {
	c.mu.Lock()
	newEpoch := false
	if s := c.channels[m.Channel]; s != nil {
		if s.epoch == m.Epoch && m.Offset <= s.offset {
			c.mu.Unlock()
			return // already seen before a reconnect
		}
		// A new epoch with no word from the server: what came before is gone.
		newEpoch = s.epoch != "" && s.epoch != m.Epoch
		s.offset, s.epoch = m.Offset, m.Epoch
	}
	c.mu.Unlock()
	if newEpoch {
		c.recoveryFailed(m.Channel, m.Offset-1, m.Epoch)
	}
	if m.Type != "skip" && c.opts.OnMessage != nil {
		c.opts.OnMessage(m)
	}
}

func (c *Client) recoveryFailed(channel string, offset uint64, epoch string) {
	frame, _ := json.Marshal(map[string]any{"channel": channel, "offset": offset, "epoch": epoch})
	c.event(Event{Type: "recovery_failed", Frame: frame})
}

// gap handles the server's word that a channel's stream jumps: the next
// message follows the gap's offset in its epoch. In the same epoch the
// missed messages are fetched from history and handed on first, while
// live ones wait; otherwise, or if history no longer holds them, a
// recovery_failed event says the application must reload.
func (c *Client) gap(raw []byte) {
	var g struct {
		Channel string `json:"channel"`
		Epoch   string `json:"epoch"`
		Offset  uint64 `json:"offset"`
	}
	if json.Unmarshal(raw, &g) != nil {
		return
	}
	c.mu.Lock()
	s := c.channels[g.Channel]
	if s == nil || s.filling || (s.epoch == g.Epoch && g.Offset <= s.offset) {
		c.mu.Unlock()
		return
	}
	if s.epoch != g.Epoch {
		s.offset, s.epoch = g.Offset, g.Epoch
		c.mu.Unlock()
		c.recoveryFailed(g.Channel, g.Offset, g.Epoch)
		return
	}
	s.filling = true
	since := s.offset
	c.mu.Unlock()
	// Not on the reading goroutine: history's answer arrives through it.
	go c.fill(s, g.Channel, g.Epoch, since, g.Offset)
}

// fill fetches the messages after since up to upTo from history, then
// hands on the live ones that waited meanwhile, and fills again if one of
// those jumps.
func (c *Client) fill(s *subscription, channel, epoch string, since, upTo uint64) {
	for {
		c.fetchMissed(s, channel, epoch, since, upTo)
		// Hand on what arrived meanwhile, and what arrives while doing so.
		for jumped := false; !jumped; {
			c.mu.Lock()
			if len(s.waiting) == 0 {
				s.filling = false
				c.mu.Unlock()
				return
			}
			m := s.waiting[0]
			if jumped = c.channels[channel] == s && m.Epoch == s.epoch && m.Offset > s.offset+1; jumped {
				since, upTo, epoch = s.offset, m.Offset-1, m.Epoch
			} else {
				s.waiting = s.waiting[1:]
			}
			c.mu.Unlock()
			if !jumped {
				c.deliver(m)
			}
		}
	}
}

// fetchMissed hands on the messages after since up to upTo from history,
// or says with recovery_failed that history no longer holds them.
func (c *Client) fetchMissed(s *subscription, channel, epoch string, since, upTo uint64) {
	for since < upTo {
		ctx, cancel := context.WithTimeout(context.Background(), c.opts.RequestTimeout)
		h, err := c.History(ctx, channel, since, int(upTo-since))
		cancel()
		var missed []Message
		for _, m := range h.Publications {
			if m.Epoch == epoch && m.Offset > since && m.Offset <= upTo {
				missed = append(missed, m)
			}
		}
		if err != nil || h.Epoch != epoch || len(missed) == 0 || missed[0].Offset != since+1 {
			c.mu.Lock()
			s.offset, s.epoch = upTo, epoch
			c.mu.Unlock()
			c.recoveryFailed(channel, upTo, epoch)
			return
		}
		for _, m := range missed {
			c.deliver(m)
		}
		since = missed[len(missed)-1].Offset
	}
}

func (c *Client) event(e Event) {
	if c.opts.OnEvent != nil {
		c.opts.OnEvent(e)
	}
}

// Backoff is the delay before reconnect attempt n (0-based): doubling
// from base up to limit, with jitter over its upper half.
func Backoff(n int, base, limit time.Duration) time.Duration {
	ceiling := limit
	if n < 30 && base<<n < limit {
		ceiling = base << n
	}
	return ceiling/2 + time.Duration(rand.Int64N(int64(ceiling/2)+1))
}

func (c *Client) reconnect() {
	for attempt := 0; c.opts.MaxAttempts == 0 || attempt < c.opts.MaxAttempts; attempt++ {
		delay := Backoff(attempt, c.opts.BackoffBase, c.opts.BackoffCap)
		c.event(Event{Type: "reconnecting", Frame: json.RawMessage(fmt.Sprintf(`{"attempt":%d,"delay_ms":%d}`, attempt+1, delay.Milliseconds()))})
		select {
		case <-c.stop:
			return
		case <-time.After(delay):
		}
		token := c.opts.Token
		if c.opts.GetToken != nil {
			if fresh, err := c.opts.GetToken(context.Background()); err == nil {
				token = fresh
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), c.opts.RequestTimeout)
		err := c.open(ctx, token)
		cancel()
		if err == nil {
			c.event(Event{Type: "connected", Frame: json.RawMessage(`{"reconnected":true}`)})
			c.restore()
			return
		}
	}
	c.giveUp()
}

func (c *Client) giveUp() {
	c.shutdown()
	c.event(Event{Type: "reconnect_failed"})
}

// shutdown marks the client closed and fails what waits in the queue.
func (c *Client) shutdown() {
	c.mu.Lock()
	c.closed = true
	queue := c.queue
	c.queue = nil
	c.mu.Unlock()
	for _, q := range queue {
		q.done <- reply{err: ErrClosed}
	}
}

// restore re-subscribes every channel with recovery, then sends what was queued.
func (c *Client) restore() {
	c.mu.Lock()
	names := make([]string, 0, len(c.channels))
	for name := range c.channels {
		names = append(names, name)
	}
	queue := c.queue
	c.queue = nil
	c.mu.Unlock()
	// A few at a time: a client with hundreds of channels does not send
	// them all at once.
	slots := make(chan struct{}, resubscribeAtOnce)
	var wg sync.WaitGroup
	for _, name := range names {
		wg.Add(1)
		slots <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			_, _ = c.keepSubscribed(context.Background(), name) // refusals are subscription_failed events
		}()
	}
	wg.Wait()
	for _, q := range queue {
		raw, err := c.Request(context.Background(), q.frame)
		q.done <- reply{raw: raw, err: err}
	}
}

func (c *Client) keepAlive() {
	ticker := time.NewTicker(c.opts.PingInterval)
	defer ticker.Stop()
	for {
		select {
		case <-c.stop:
			return
		case <-ticker.C:
			ctx, cancel := context.WithTimeout(context.Background(), c.opts.RequestTimeout)
			_, _ = c.Request(ctx, map[string]any{"type": "ping"})
			cancel()
		}
	}
}

// Close disconnects and stops reconnecting.
func (c *Client) Close() {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	conn := c.conn
	c.mu.Unlock()
	close(c.stop)
	if conn != nil {
		_ = conn.WriteMessage(gws.OpcodeText, []byte(`{"type":"disconnect"}`))
		_ = conn.WriteClose(1000, nil)
	}
}

// Request sends frame with a fresh id and returns the reply; an error
// reply becomes an *Error.
func (c *Client) Request(ctx context.Context, frame map[string]any) (json.RawMessage, error) {
	c.mu.Lock()
	if !c.connected {
		closed := c.closed
		c.mu.Unlock()
		if closed {
			return nil, ErrClosed
		}
		return nil, ErrDisconnected
	}
	c.nextID++
	id := c.nextID
	done := make(chan reply, 1)
	c.pending[id] = done
	conn := c.conn
	c.mu.Unlock()
	withID := make(map[string]any, len(frame)+1)
	for k, v := range frame {
		withID[k] = v
	}
	withID["id"] = id
	raw, err := json.Marshal(withID)
	if err != nil {
		return nil, err
	}
	if err := conn.WriteMessage(gws.OpcodeText, raw); err != nil {
		return nil, ErrDisconnected
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.opts.RequestTimeout)
		defer cancel()
	}
	select {
	case r := <-done:
		return r.raw, r.err
	case <-ctx.Done():
		c.mu.Lock()
		delete(c.pending, id)
		c.mu.Unlock()
		return nil, fmt.Errorf("switchboard: %s: %w", frame["type"], ctx.Err())
	}
}

// Subscribed is the broker's answer to a subscribe.
type Subscribed struct {
	Channel   string `json:"channel"`
	Offset    uint64 `json:"offset"`
	Epoch     string `json:"epoch"`
	Recovered bool   `json:"recovered"`
}

// SubscribeOptions ask for join/leave events and carry presence info.
type SubscribeOptions struct {
	Presence bool
	Info     any
}

// Subscribe joins channel; after a reconnect it is joined again, recovering
// what was missed (a "recovery_failed" event says when that was impossible).
func (c *Client) Subscribe(ctx context.Context, channel string, opts SubscribeOptions) (Subscribed, error) {
	s := &subscription{presence: opts.Presence}
	if opts.Info != nil {
		s.info, _ = json.Marshal(opts.Info)
	}
	c.mu.Lock()
	if existing := c.channels[channel]; existing != nil {
		s = existing
	}
	c.channels[channel] = s
	c.mu.Unlock()
	return c.keepSubscribed(ctx, channel)
}

// resubscribeAtOnce bounds the re-subscriptions in flight after a reconnect.
const resubscribeAtOnce = 32

// retryable are refusals that retrying can fix: the server was busy, or
// the channel was moving.
func retryable(err error) bool {
	var refusal *Error
	return errors.As(err, &refusal) && (refusal.Code == "rate_limited" || refusal.Code == "unavailable")
}

// keepSubscribed subscribes until the server accepts, with backoff while
// the refusal is one retrying can fix, emitting a subscription_failed
// event ({"channel","code","error","retrying"}) for each refusal. A channel
// refused for good is dropped, so the client never believes it is
// subscribed when the server refused; one that cannot be reached while
// disconnected stays, to be joined on reconnect.
func (c *Client) keepSubscribed(ctx context.Context, channel string) (Subscribed, error) {
	for attempt := 0; ; attempt++ {
		sub, err := c.resubscribe(ctx, channel)
		if err == nil || errors.Is(err, ErrDisconnected) || errors.Is(err, ErrClosed) || errors.Is(err, errUnsubscribed) {
			return sub, err
		}
		again := retryable(err) && ctx.Err() == nil
		var refusal *Error
		code := "failed"
		if errors.As(err, &refusal) {
			code = refusal.Code
		}
		frame, _ := json.Marshal(map[string]any{"channel": channel, "code": code, "error": err.Error(), "retrying": again})
		c.event(Event{Type: "subscription_failed", Frame: frame, Err: err})
		if !again {
			c.mu.Lock()
			delete(c.channels, channel)
			c.mu.Unlock()
			return sub, err
		}
		select {
		case <-time.After(Backoff(min(attempt, 5), c.opts.BackoffBase, c.opts.BackoffCap)):
		case <-ctx.Done():
		case <-c.stop:
			return sub, ErrClosed
		}
	}
}

// errUnsubscribed: the channel was left while it was being joined.
var errUnsubscribed = errors.New("switchboard: unsubscribed meanwhile")

func (c *Client) resubscribe(ctx context.Context, channel string) (Subscribed, error) {
	c.mu.Lock()
	s := c.channels[channel]
	if s == nil {
		c.mu.Unlock()
		return Subscribed{}, errUnsubscribed
	}
	frame := map[string]any{"type": "subscribe", "channel": channel}
	if s.presence {
		frame["presence"] = true
	}
	if s.info != nil {
		frame["info"] = s.info
	}
	recovering := s.epoch != ""
	if recovering {
		frame["recover"] = map[string]any{"offset": s.offset, "epoch": s.epoch}
	}
	c.mu.Unlock()
	raw, err := c.Request(ctx, frame)
	if err != nil {
		return Subscribed{}, err
	}
	var sub Subscribed
	if err := json.Unmarshal(raw, &sub); err != nil {
		return sub, err
	}
	if recovering && !sub.Recovered {
		c.event(Event{Type: "recovery_failed", Frame: raw})
	}
	return sub, nil
}

// subscribed takes a channel's place from a subscribe reply, on the
// reading goroutine, before any frame that follows it: unless the
// subscription recovered from where it stood, its stream starts there.
func (c *Client) subscribed(raw []byte) {
	var sub Subscribed
	if json.Unmarshal(raw, &sub) != nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if s := c.channels[sub.Channel]; s != nil && !sub.Recovered {
		s.offset, s.epoch = sub.Offset, sub.Epoch
	}
}

// Unsubscribe leaves channel.
func (c *Client) Unsubscribe(ctx context.Context, channel string) error {
	c.mu.Lock()
	delete(c.channels, channel)
	c.mu.Unlock()
	_, err := c.Request(ctx, map[string]any{"type": "unsubscribe", "channel": channel})
	return err
}

// Publish publishes data (any JSON-encodable value) and returns its offset.
// While disconnected it waits in the offline queue, if there is one.
func (c *Client) Publish(ctx context.Context, channel string, data any) (uint64, error) {
	return c.publish(ctx, map[string]any{"type": "message", "channel": channel, "data": data})
}

// PublishIfAt publishes only if the channel's last offset is expect; else
// the error is an *Error with Code "offset_mismatch" and the current Offset.
func (c *Client) PublishIfAt(ctx context.Context, channel string, data any, expect uint64) (uint64, error) {
	return c.publish(ctx, map[string]any{"type": "message", "channel": channel, "data": data, "expect_offset": expect})
}

func (c *Client) publish(ctx context.Context, frame map[string]any) (uint64, error) {
	raw, err := c.Request(ctx, frame)
	if errors.Is(err, ErrDisconnected) && c.opts.OfflineQueue > 0 {
		raw, err = c.enqueue(ctx, frame)
	}
	if err != nil {
		return 0, err
	}
	var res struct {
		Offset uint64 `json:"offset"`
	}
	err = json.Unmarshal(raw, &res)
	return res.Offset, err
}

func (c *Client) enqueue(ctx context.Context, frame map[string]any) (json.RawMessage, error) {
	done := make(chan reply, 1)
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, ErrClosed
	}
	if len(c.queue) >= c.opts.OfflineQueue {
		c.mu.Unlock()
		return nil, fmt.Errorf("switchboard: offline queue full: %w", ErrDisconnected)
	}
	c.queue = append(c.queue, queued{frame: frame, done: done})
	c.mu.Unlock()
	select {
	case r := <-done:
		return r.raw, r.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Send delivers data to every connection of user; it returns how many.
func (c *Client) Send(ctx context.Context, user string, data any) (int, error) {
	raw, err := c.Request(ctx, map[string]any{"type": "send", "user": user, "data": data})
	if err != nil {
		return 0, err
	}
	var res struct {
		Connections int `json:"connections"`
	}
	err = json.Unmarshal(raw, &res)
	return res.Connections, err
}

// PresenceUser is one user in a channel.
type PresenceUser struct {
	User        string          `json:"user"`
	Connections int             `json:"connections"`
	Info        json.RawMessage `json:"info"`
}

// Presence lists who is in channel (subscribers only).
func (c *Client) Presence(ctx context.Context, channel string) ([]PresenceUser, error) {
	raw, err := c.Request(ctx, map[string]any{"type": "presence", "channel": channel})
	if err != nil {
		return nil, err
	}
	var res struct {
		Users []PresenceUser `json:"users"`
	}
	err = json.Unmarshal(raw, &res)
	return res.Users, err
}

// History is a page of a channel's stored publications. More says that
// stored publications follow the last one: ask again with since set to
// its offset.
type History struct {
	Publications []Message `json:"publications"`
	Offset       uint64    `json:"offset"`
	Epoch        string    `json:"epoch"`
	More         bool      `json:"more"`
}

// History returns the stored publications after since, at most limit (0: all).
func (c *Client) History(ctx context.Context, channel string, since uint64, limit int) (History, error) {
	frame := map[string]any{"type": "history", "channel": channel, "since": since}
	if limit > 0 {
		frame["limit"] = limit
	}
	raw, err := c.Request(ctx, frame)
	if err != nil {
		return History{}, err
	}
	var h History
	err = json.Unmarshal(raw, &h)
	return h, err
}
