package actors_test

import (
	"context"
	"fmt"
	"log"
	"log/slog"

	"github.com/switchboard/switchboard/actors"
	"github.com/switchboard/switchboard/transport/client"
)

// A program, or a test, runs a whole node in one call: here a single node
// on a free loopback port, a client subscribed to a channel, and a
// publication from the program's side reaching it.
func ExampleStart() {
	cfg := actors.NewConfig()
	cfg.Addr = "127.0.0.1:0"                // any free port; sb.Addr() tells which
	cfg.Log = slog.New(slog.DiscardHandler) // or nil: logs on standard error
	cfg.Namespaces = "news:history=100/5m"  // the flags' syntax, see Config
	sb, err := actors.Start(cfg)
	if err != nil {
		log.Fatal(err)
	}
	defer sb.Close(context.Background())
	<-sb.Ready()

	ctx := context.Background()
	received := make(chan client.Message, 1)
	c, err := client.Dial(ctx, client.Options{
		URL:       "ws://" + sb.Addr() + "/ws",
		User:      "alice", // open development mode: no JWT key configured
		OnMessage: func(m client.Message) { received <- m },
	})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Subscribe(ctx, "news:today", client.SubscribeOptions{}); err != nil {
		log.Fatal(err)
	}

	offset, err := sb.Broker().Publish(ctx, "news:today", []byte(`{"headline":"embedded"}`), "")
	if err != nil {
		log.Fatal(err)
	}
	m := <-received
	fmt.Println("published at offset", offset)
	fmt.Printf("alice got %s at offset %d\n", m.Data, m.Offset)
	// Output:
	// published at offset 1
	// alice got {"headline":"embedded"} at offset 1
}
