// Package client is the Go client of Switchboard, with the semantics of the
// browser client: requests correlated by id, automatic reconnection with
// exponential backoff and jitter, re-authentication, re-subscription with
// recovery from the last offset seen, and a bounded queue of publications
// made while disconnected.
//
// client.go holds the options, the connection and what arrives on it;
// requests.go the requests and the operations built on them;
// subscriptions.go the channels kept joined; recovery.go the streams
// handed on in order, with gaps filled from history; reconnect.go the
// backoff and what is restored after it; tokens.go token refresh.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
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

// Close codes the client acts on; transport/codes.go says what each means
// for reconnecting.
const (
	closeNormal             = 1000 // not reconnected
	closeAbnormal           = 1006 // no close frame: reconnected
	closeAuth               = 4001 // reconnected only with GetToken
	closeKicked             = 4010 // not reconnected
	closeTooManyConnections = 4029 // not reconnected
)

type events struct{ c *Client }

func (e *events) OnOpen(*gws.Conn) {}

func (e *events) OnPing(*gws.Conn, []byte) {}

func (e *events) OnPong(*gws.Conn, []byte) {}

func (e *events) OnMessage(socket *gws.Conn, m *gws.Message) {
	defer m.Close()
	e.c.receive(bytes.Clone(m.Bytes()))
}

func (e *events) OnClose(socket *gws.Conn, err error) {
	c := e.c
	code := uint16(closeAbnormal)
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
	final := code == closeNormal || code == closeKicked || code == closeTooManyConnections || (code == closeAuth && c.opts.GetToken == nil)
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
	case "presence_batch":
		// Joins and leaves that happened together: handed on one by one.
		var batch struct{ Events []json.RawMessage }
		if json.Unmarshal(raw, &batch) != nil {
			return
		}
		for _, e := range batch.Events {
			var event struct{ Type string }
			if json.Unmarshal(e, &event) == nil {
				c.event(Event{Type: event.Type, Frame: e})
			}
		}
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

func (c *Client) event(e Event) {
	if c.opts.OnEvent != nil {
		c.opts.OnEvent(e)
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
		_ = conn.WriteClose(closeNormal, nil)
	}
}
