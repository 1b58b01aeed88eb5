package tests

// Issue #13: history is paged — a limit and a since cursor, "more" while
// stored publications follow — and bad paging input gets an error frame
// with a code on a connection that stays open.

import (
	"fmt"
	"testing"
)

func TestHistoryIsPaged(t *testing.T) {
	t.Parallel()
	srv := startServer(t, "--rate-limit", "0", "--namespaces", "doc:history=1500/5m")
	writer := join(t, srv, "writer")
	const stored = 1200
	ids := make([]string, stored)
	for i := range ids {
		ids[i] = writer.publishAsync(t, "doc:pages", fmt.Sprintf("p%d", i+1))
	}
	for _, id := range ids {
		if f, ok := writer.reply(id, waitTimeout); !ok || f.typ() != "published" {
			t.Fatalf("publishing: %v", f)
		}
	}
	reader := join(t, srv, "reader")
	history := func(fields map[string]any) frame {
		t.Helper()
		fields["type"], fields["channel"] = "history", "doc:pages"
		return reader.call(t, fields, waitTimeout)
	}
	// offsets returns a page's publication offsets, checking each one's data.
	offsets := func(page frame) []int64 {
		t.Helper()
		if page.typ() != "history" || page.offset() != stored {
			t.Fatalf("history answer %v", page)
		}
		var out []int64
		for _, p := range page.m["publications"].([]any) {
			m := p.(map[string]any)
			o := int64(m["offset"].(float64))
			if m["data"] != fmt.Sprintf("p%d", o) {
				t.Fatalf("offset %d holds %v", o, m["data"])
			}
			out = append(out, o)
		}
		return out
	}
	span := func(got []int64) string {
		if len(got) == 0 {
			return "none"
		}
		for i := range got {
			if got[i] != got[0]+int64(i) {
				return fmt.Sprintf("not contiguous: %v", got)
			}
		}
		return fmt.Sprintf("%d-%d", got[0], got[len(got)-1])
	}

	t.Run("a limit gives a page and more, since continues exactly where it ended", func(t *testing.T) {
		var all []int64
		for since, pages := int64(0), 0; ; pages++ {
			page := history(map[string]any{"since": since, "limit": 250})
			got := offsets(page)
			all = append(all, got...)
			if len(got) != min(250, int(stored-since)) {
				t.Fatalf("page since %d: %s", since, span(got))
			}
			if more := page.m["more"] == true; more != (since+250 < stored) {
				t.Fatalf("page since %d (%s): more = %v", since, span(got), page.m["more"])
			}
			if page.m["more"] != true {
				break
			}
			since = got[len(got)-1]
		}
		if s := span(all); s != fmt.Sprintf("1-%d", stored) {
			t.Fatalf("paging read %s, want 1-%d exactly once", s, stored)
		}
	})

	t.Run("a limit over the maximum gives the maximum of 1000", func(t *testing.T) {
		page := history(map[string]any{"limit": 1_000_000})
		if s := span(offsets(page)); s != "1-1000" || page.m["more"] != true {
			t.Fatalf("limit 1000000: %s, more %v; want 1-1000 and more", s, page.m["more"])
		}
	})

	t.Run("since at or beyond the channel's offset gives an empty page", func(t *testing.T) {
		for _, since := range []int64{stored, stored + 5000} {
			page := history(map[string]any{"since": since, "limit": 10})
			if s := span(offsets(page)); s != "none" || page.m["more"] != nil {
				t.Fatalf("since %d: %s, more %v; want none, and the channel's offset %d", since, s, page.m["more"], stored)
			}
		}
	})

	t.Run("bad paging input gets an error with a code, and the connection stays open", func(t *testing.T) {
		for i, bad := range []struct{ name, field, value string }{
			{"negative limit", "limit", `-1`},
			{"zero limit", "limit", `0`},
			{"fractional limit", "limit", `2.5`},
			{"exponent limit", "limit", `1e3`},
			{"string limit", "limit", `"10"`},
			{"null limit", "limit", `null`},
			{"object limit", "limit", `{}`},
			{"limit past uint64", "limit", `99999999999999999999999`},
			{"negative since", "since", `-1`},
			{"string since", "since", `"5"`},
			{"word since", "since", `"latest"`},
			{"fractional since", "since", `1.5`},
			{"since past uint64", "since", `99999999999999999999999`},
		} {
			id := fmt.Sprintf("bad-%d", i)
			reader.writeMu.Lock()
			err := reader.conn.WriteString(fmt.Sprintf(`{"type":"history","channel":"doc:pages","id":%q,%q:%s}`, id, bad.field, bad.value))
			reader.writeMu.Unlock()
			if err != nil {
				t.Fatal(err)
			}
			f, ok := reader.reply(id, waitTimeout)
			if !ok || f.typ() != "error" || f.code() == "" || f.m["error"] == "" {
				t.Errorf("%s (%s: %s): answered %v (%s), want an error with a code", bad.name, bad.field, bad.value, f, reader.state())
			}
			t.Logf("%s: %s (%v)", bad.name, f.code(), f.m["error"])
			if pong := reader.call(t, map[string]any{"type": "ping"}, waitTimeout); pong.typ() != "pong" {
				t.Fatalf("after %s: %v", bad.name, pong)
			}
		}
	})
}
