package actors

import (
	"bytes"
	"testing"
	"time"
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
		page := c.historySince(since, 1000)
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
	if page := c.historySince(0, 5); len(page.Frames) != 5 || !page.More {
		t.Fatalf("a limit of 5 gave %d frames, more=%v", len(page.Frames), page.More)
	}
	if page := c.historySince(295, 0); len(page.Frames) != 5 || page.More {
		t.Fatalf("the last five: %d frames, more=%v", len(page.Frames), page.More)
	}
	huge := &channel{opts: ChannelOptions{HistorySize: 10, HistoryTTL: time.Hour}, last: 1, delivered: 1,
		history: []stored{{offset: 1, at: time.Now(), frame: make([]byte, 2*maxHistoryPageBytes)}}}
	if page := huge.historySince(0, 0); len(page.Frames) != 1 || page.More {
		t.Fatalf("a publication larger than a page must still be served alone: %d frames, more=%v", len(page.Frames), page.More)
	}
}

// A recovery backlog larger than a history page is not replayed at once
// (it would overflow the client's outbox and close it, again at every
// reconnect): the client is told recovered:false and pages the history.
func TestRecoveryBacklogIsBounded(t *testing.T) {
	c := &channel{opts: ChannelOptions{HistorySize: 1000, HistoryTTL: time.Hour}, epoch: "e", last: 300, delivered: 300}
	for offset := uint64(1); offset <= 300; offset++ {
		c.history = append(c.history, stored{offset: offset, at: time.Now(), frame: bytes.Repeat([]byte{'x'}, 10<<10)})
	}
	if ok, backlog := c.recover(290, "e"); !ok || len(backlog) != 10 {
		t.Fatalf("a small backlog: recovered=%v with %d publications, want true with 10", ok, len(backlog))
	}
	if ok, backlog := c.recover(0, "e"); ok || backlog != nil {
		t.Fatalf("a 3 MB backlog: recovered=%v with %d publications, want false with none", ok, len(backlog))
	}
}
