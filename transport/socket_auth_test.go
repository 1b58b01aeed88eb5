package transport

import (
	"testing"
	"time"
)

// The expiry timer and a refresh race: the timer fires while the reader is
// still handling a frame it read before the deadline. These tests stop the
// reader at exactly that point (the frame read, the timer fired) and let
// it go on, so the interleaving that lost connections happens every time.

// raceTheDeadline connects with a token that expires in one to two
// seconds and returns the connection's state once its deadline has passed
// while a frame read at readAt (which sees the deadline) is being handled.
func raceTheDeadline(t *testing.T, readAt func(deadline time.Time) time.Time) (*Server, *socketState, *testClient, time.Time) {
	t.Helper()
	s, addr := startTestServer(t, withAuth(t, Options{}), newFakeBroker())
	c := dialTestServer(t, addr, "token="+testToken(t, "alice", time.Now().Add(2*time.Second), nil))
	c.expect("authenticated")
	st := s.onlySocket(t)
	st.mu.Lock()
	deadline := st.deadline
	st.mu.Unlock()
	// The reader has just read a frame, as OnMessage marks it.
	st.readingFrame()
	read := readAt(deadline)
	eventually(t, 5*time.Second, "the expiry timer to fire", func() bool { return st.pastDue.Load() || st.out.isClosing() })
	return s, st, c, read
}

func TestRefreshReadBeforeTheDeadlineBeatsTheTimer(t *testing.T) {
	s, st, c, readAt := raceTheDeadline(t, func(time.Time) time.Time { return time.Now() })
	fresh := time.Now().Add(time.Hour)
	s.authenticate(st, testToken(t, "alice", fresh, nil), readAt)
	s.doneReading(st)
	if c.expect("authenticated"); st.out.isClosing() {
		t.Fatal("a refresh read before the deadline lost to the expiry timer")
	}
	st.mu.Lock()
	deadline := st.deadline
	st.mu.Unlock()
	if deadline.Unix() != fresh.Unix() {
		t.Fatalf("deadline %v, want the new token's %v", deadline, fresh)
	}
}

func TestDeadlinePassingWhileAFrameIsHandled(t *testing.T) {
	cases := []struct {
		name   string
		handle func(s *Server, st *socketState, readAt time.Time)
		readAt func(deadline time.Time) time.Time
		text   string
	}{
		{"a frame that is not a token", func(*Server, *socketState, time.Time) {},
			func(time.Time) time.Time { return time.Now() }, AuthExpired},
		{"a refresh read after the deadline", func(s *Server, st *socketState, readAt time.Time) {
			s.authenticate(st, testToken(t, "alice", time.Now().Add(time.Hour), nil), readAt)
		}, func(deadline time.Time) time.Time { return deadline.Add(time.Millisecond) }, AuthExpired},
		{"a refresh with a bad token", func(s *Server, st *socketState, readAt time.Time) {
			s.authenticate(st, "not-a-token", readAt)
		}, func(time.Time) time.Time { return time.Now() }, AuthInvalid},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, st, c, readAt := raceTheDeadline(t, tc.readAt)
			tc.handle(s, st, readAt)
			s.doneReading(st)
			if e := c.expect("error"); e["error"] != tc.text || e["code"] != CodeUnauthenticated {
				t.Fatalf("error frame %v, want %q", e, tc.text)
			}
			if code := c.expectClose(); code != CloseAuth {
				t.Fatalf("closed with %d, want %d", code, CloseAuth)
			}
			select {
			case f := <-c.frames:
				t.Fatalf("a second frame after the refusal: %v", f)
			default:
			}
		})
	}
}

func TestAuthFrameReadBeforeTheAuthTimeoutBeatsTheTimer(t *testing.T) {
	s, addr := startTestServer(t, withAuth(t, Options{AuthTimeout: 200 * time.Millisecond}), newFakeBroker())
	c := dialTestServer(t, addr, "")
	var st *socketState
	eventually(t, 5*time.Second, "the connection", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return len(s.sockets) == 1
	})
	st = s.onlySocket(t)
	st.readingFrame()
	readAt := time.Now()
	eventually(t, 5*time.Second, "the auth timeout to fire", func() bool { return st.pastDue.Load() || st.out.isClosing() })
	s.authenticate(st, testToken(t, "bob", time.Now().Add(time.Hour), nil), readAt)
	s.doneReading(st)
	if a := c.expect("authenticated"); a["user_id"] != "bob" || st.out.isClosing() {
		t.Fatalf("an auth frame read in time lost to the auth timeout: %v", a)
	}
}
