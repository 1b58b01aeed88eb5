package actors

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/switchboard/switchboard/transport"
)

// A history page fits a client's outbox: it stops at maxHistoryPageBytes
// (with at least one publication) and says more follow; asking again after
// its last offset continues in order, with nothing skipped or repeated.
func TestHistoryIsPagedByBytes(t *testing.T) {
	c := &channel{opts: ChannelOptions{HistorySize: 1000, HistoryTTL: time.Hour}, last: 300, delivered: 300}
	for offset := uint64(1); offset <= 300; offset++ {
		c.history = append(c.history, stored{offset: offset, at: time.Now(), frame: bytes.Repeat([]byte{'x'}, 10<<10)})
	}
	var got []uint64
	since, pages := uint64(0), 0
	for {
		page := c.historySince(since, 1000, "")
		pages++
		size := 0
		for _, f := range page.Frames {
			size += len(f)
		}
		if size > maxHistoryPageBytes {
			t.Fatalf("page %d holds %d bytes, over %d", pages, size, maxHistoryPageBytes)
		}
		for range page.Frames {
			since++
			got = append(got, since)
		}
		if !page.More {
			break
		}
		if pages > 10 {
			t.Fatal("paging does not end")
		}
	}
	if len(got) != 300 || pages < 3 {
		t.Fatalf("read %d publications in %d pages, want 300 in 3 or more", len(got), pages)
	}
	if page := c.historySince(0, 5, ""); len(page.Frames) != 5 || !page.More {
		t.Fatalf("a limit of 5 gave %d frames, more=%v", len(page.Frames), page.More)
	}
	if page := c.historySince(295, 0, ""); len(page.Frames) != 5 || page.More {
		t.Fatalf("the last five: %d frames, more=%v", len(page.Frames), page.More)
	}
	huge := &channel{opts: ChannelOptions{HistorySize: 10, HistoryTTL: time.Hour}, last: 1, delivered: 1,
		history: []stored{{offset: 1, at: time.Now(), frame: make([]byte, 2*maxHistoryPageBytes)}}}
	if page := huge.historySince(0, 0, ""); len(page.Frames) != 1 || page.More {
		t.Fatalf("a publication larger than a page must still be served alone: %d frames, more=%v", len(page.Frames), page.More)
	}
}

// A recovery backlog larger than a history page is not replayed at once
// (it would overflow the client's outbox and close it, again at every
// reconnect): a gap frame sends the client to read it from history.
func TestRecoveryBacklogIsBounded(t *testing.T) {
	c := &channel{opts: ChannelOptions{HistorySize: 1000, HistoryTTL: time.Hour}, epoch: "e", last: 300, delivered: 300}
	for offset := uint64(1); offset <= 300; offset++ {
		c.history = append(c.history, stored{offset: offset, at: time.Now(), frame: bytes.Repeat([]byte{'x'}, 10<<10)})
	}
	if ok, backlog := c.recover(290, "e", ""); !ok || len(backlog) != 10 {
		t.Fatalf("a small backlog: recovered=%v with %d publications, want true with 10", ok, len(backlog))
	}
	ok, backlog := c.recover(0, "e", "")
	if !ok || len(backlog) != 1 || !strings.Contains(string(transport.FramePayload(backlog[0])), `"type":"gap"`) ||
		!strings.Contains(string(transport.FramePayload(backlog[0])), `"offset":300`) {
		t.Fatalf("a 3 MB backlog: recovered=%v with %d frames, want true with one gap frame up to offset 300", ok, len(backlog))
	}
}

// A publication that excluded a user is, for that user alone, a skip
// frame in history and in a recovery backlog: the offsets stay contiguous
// and the data never reaches them.
func TestExcludedUserSeesSkips(t *testing.T) {
	c := &channel{name: "doc:1", opts: ChannelOptions{HistorySize: 10, HistoryTTL: time.Hour}, epoch: "e", last: 3, delivered: 3}
	for offset := uint64(1); offset <= 3; offset++ {
		s := stored{offset: offset, at: time.Now(), frame: transport.MessageFrame("doc:1", "", []byte(`"secret"`), offset, "e", 1)}
		if offset == 2 {
			s.excluded = "bob"
		}
		c.history = append(c.history, s)
	}
	types := func(frames [][]byte) string {
		var got []string
		for _, f := range frames {
			var m struct {
				Type   string `json:"type"`
				Offset uint64 `json:"offset"`
			}
			_ = json.Unmarshal(transport.FramePayload(f), &m)
			got = append(got, fmt.Sprint(m.Type, " ", m.Offset))
		}
		return strings.Join(got, ", ")
	}
	if got := types(c.historySince(0, 0, "bob").Frames); got != "message 1, skip 2, message 3" {
		t.Fatalf("bob's history: %s", got)
	}
	if got := types(c.historySince(0, 0, "alice").Frames); got != "message 1, message 2, message 3" {
		t.Fatalf("alice's history: %s", got)
	}
	if ok, backlog := c.recover(1, "e", "bob"); !ok || types(backlog) != "skip 2, message 3" {
		t.Fatalf("bob's recovery: %v %s", ok, types(backlog))
	}
	if _, backlog := c.recover(1, "e", "alice"); types(backlog) != "message 2, message 3" {
		t.Fatalf("alice's recovery: %s", types(backlog))
	}
	if h := c.state().History; len(h) != 3 || h[1].ExcludedUser != "bob" || h[0].ExcludedUser != "" {
		t.Fatalf("a successor would not know whom offset 2 excluded: %v", h)
	}
}
