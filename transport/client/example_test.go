package client_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/switchboard/switchboard/actors"
	"github.com/switchboard/switchboard/cluster"
	"github.com/switchboard/switchboard/transport"
	"github.com/switchboard/switchboard/transport/client"
)

// A client subscribes to a channel and publishes to it; publications
// arrive through OnMessage, in order.
func Example() {
	received := make(chan client.Message, 1)
	ctx := context.Background()
	c, err := client.Dial(ctx, client.Options{
		URL:       brokerURL(), // e.g. ws://127.0.0.1:8765/ws
		User:      "alice",     // development mode; with tokens, set Token or GetToken
		OnMessage: func(m client.Message) { received <- m },
	})
	if err != nil {
		fmt.Println("dial:", err)
		return
	}
	defer c.Close()

	if _, err := c.Subscribe(ctx, "chat:lobby", client.SubscribeOptions{}); err != nil {
		fmt.Println("subscribe:", err)
		return
	}
	offset, err := c.Publish(ctx, "chat:lobby", map[string]string{"text": "hello"})
	if err != nil {
		fmt.Println("publish:", err)
		return
	}
	m := <-received
	fmt.Println("published at offset", offset)
	fmt.Printf("%s from %s: %s\n", m.Channel, m.From, m.Data)
	// Output:
	// published at offset 1
	// chat:lobby from alice: {"text":"hello"}
}

// PublishIfAt publishes only if nobody published since the offset the
// caller last saw: a refusal says where the channel is now.
func ExampleClient_PublishIfAt() {
	ctx := context.Background()
	c, err := client.Dial(ctx, client.Options{URL: brokerURL(), User: "bob"})
	if err != nil {
		fmt.Println("dial:", err)
		return
	}
	defer c.Close()

	first, _ := c.PublishIfAt(ctx, "board:1", "move e4", 0)
	fmt.Println("first move at offset", first)
	_, err = c.PublishIfAt(ctx, "board:1", "move d4", 0) // someone already moved
	var refusal *client.Error
	if errors.As(err, &refusal) && refusal.Code == "offset_mismatch" {
		fmt.Println("refused: the board is at offset", refusal.Offset)
	}
	// Output:
	// first move at offset 1
	// refused: the board is at offset 1
}

// OnEvent hears the lifecycle of a connection that heals itself:
// disconnected, reconnecting, connected, and recovery_failed when
// history no longer holds what was missed. (Compiled, not run: what it
// prints depends on the network.)
func ExampleOptions_reconnecting() {
	c, err := client.Dial(context.Background(), client.Options{
		URL:          brokerURL(),
		User:         "carol",
		BackoffBase:  500 * time.Millisecond, // the first retry after 0.25-0.5 s
		BackoffCap:   10 * time.Second,
		MaxAttempts:  0,   // retry forever
		OfflineQueue: 100, // publications kept while disconnected
		OnEvent: func(e client.Event) {
			switch e.Type {
			case "disconnected", "reconnecting", "connected":
				fmt.Println(e.Type, string(e.Frame))
			case "recovery_failed":
				fmt.Println("reload the channel's state:", string(e.Frame))
			}
		},
	})
	if err != nil {
		fmt.Println("dial:", err)
		return
	}
	defer c.Close()
}

// Backoff is the delay before a reconnect attempt: doubling from the base,
// capped, with jitter over its upper half.
func ExampleBackoff() {
	for attempt := range 4 {
		d := client.Backoff(attempt, time.Second, 4*time.Second)
		ceiling := min(time.Second<<attempt, 4*time.Second)
		fmt.Println(attempt, d >= ceiling/2 && d <= ceiling)
	}
	// Output:
	// 0 true
	// 1 true
	// 2 true
	// 3 true
}

// TokenExpiry reads when a token expires, to refresh it in time; the
// client does so itself when Options.GetToken is set.
func ExampleTokenExpiry() {
	// {"alg":"HS256"}.{"sub":"alice","exp":1767225600}.signature
	token := "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSIsImV4cCI6MTc2NzIyNTYwMH0.c2ln"
	exp, ok := client.TokenExpiry(token)
	fmt.Println(exp.UTC().Format(time.RFC3339), ok)
	// Output: 2026-01-01T00:00:00Z true
}

var broker struct {
	once sync.Once
	url  string
}

// brokerURL starts, once for all the examples, a one-node broker in this
// process on a free loopback port, as a program that embeds it would
// (cmd/switchboard does the same from its flags), and returns its
// WebSocket URL. It stops with the process.
func brokerURL() string {
	broker.once.Do(func() {
		log := slog.New(slog.NewTextHandler(io.Discard, nil))
		metrics := transport.NewMetrics()
		b := actors.NewBroker(actors.Options{RequestTimeout: 5 * time.Second, GrainIdleTimeout: 30 * time.Second}, metrics, log)
		node, err := cluster.Start(cluster.Config{Name: "example", NodeAddr: "127.0.0.1:0", RequestTimeout: 5 * time.Second,
			Log: log, LogLevel: slog.LevelError, BeforeJoin: func(n *cluster.Node) error { return b.Start(n.Cluster, n) }}, b.Kinds())
		if err != nil {
			panic(err)
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			panic(err)
		}
		server := transport.NewServer(transport.Options{Ready: node.Ready}, b, b, metrics, log)
		go func() { _ = server.Serve(ln) }()
		broker.url = "ws://" + ln.Addr().String() + "/ws"
	})
	return broker.url
}
