package transport

import (
	"errors"
	"time"
)

// A socket's authentication: its token verified at the handshake or in an
// auth frame, refreshed while it is open, and the deadline (the auth
// timeout, then the token's expiry) that ends it.

// authenticate verifies a token for a new or an already open connection;
// readAt is when the frame that carried it was read.
func (s *Server) authenticate(st *socketState, token string, readAt time.Time) {
	id, err := s.opts.Auth.Verify(token)
	if err != nil {
		text := AuthInvalid
		if errors.Is(err, ErrTokenExpired) {
			text = AuthExpired
		}
		s.log.Debug("authentication failed", "connection", st.out.ID, "err", err)
		s.refuse(st, text, false)
		return
	}
	st.mu.Lock()
	if st.ended {
		st.mu.Unlock()
		return
	}
	if st.inbound != nil && id.User != st.out.User {
		st.mu.Unlock()
		s.refuse(st, AuthOtherUser, false)
		return
	}
	if st.inbound != nil && !st.deadline.IsZero() && readAt.After(st.deadline) {
		// Read after the old token's deadline: too late to save the connection.
		st.mu.Unlock()
		s.refuse(st, AuthExpired, false)
		return
	}
	if id.Expires.IsZero() {
		s.clearDeadline(st)
	} else {
		s.armDeadline(st, id.Expires.Add(s.opts.Auth.cfg.Leeway), AuthExpired)
	}
	inbound := st.inbound
	if inbound != nil {
		// The new claims hold from the next frame on; the broker ends the
		// subscriptions they no longer allow.
		st.perms = s.permissions(id)
		refresh := Refresh{Permissions: st.perms, Info: s.tokenInfo(id)}
		st.mu.Unlock()
		st.out.Push(AuthenticatedFrame(id.User))
		inbound.Refreshed(refresh)
		return
	}
	st.mu.Unlock()
	st.out.User, st.out.Info = id.User, s.tokenInfo(id)
	st.out.Push(AuthenticatedFrame(id.User))
	s.open(st, id)
}

// open hands an authenticated connection to the broker.
func (s *Server) open(st *socketState, id *Identity) {
	perms := s.permissions(id)
	s.users.join(st.out.User)
	inbound := s.connector.Open(st.out)
	st.mu.Lock()
	st.inbound, st.perms = inbound, perms
	ended := st.ended
	st.mu.Unlock()
	if ended { // the socket closed while the broker was opening it
		inbound.Closed()
	}
}

// permissions are what id's claims allow, the defaults where it has none,
// within the deny rules.
func (s *Server) permissions(id *Identity) Permissions {
	perms := Permissions{Subscribe: s.opts.DefaultSubscribe, Publish: s.opts.DefaultPublish, Send: s.opts.DefaultSend,
		DenySubscribe: s.opts.DenySubscribe, DenyPublish: s.opts.DenyPublish, DenySend: s.opts.DenySend}
	if id.Subscribe != nil {
		perms.Subscribe = id.Subscribe
	}
	if id.Publish != nil {
		perms.Publish = id.Publish
	}
	if id.Send != nil {
		perms.Send = id.Send
	}
	return perms
}

// tokenInfo is the presence info id's token vouches for.
func (s *Server) tokenInfo(id *Identity) TokenInfo {
	if id.Info == nil {
		return TokenInfo{}
	}
	if isNull(id.Info) || (s.opts.Limits.MaxInfoBytes > 0 && len(id.Info) > s.opts.Limits.MaxInfoBytes) {
		return TokenInfo{Claimed: true} // nothing to show (too large to)
	}
	return TokenInfo{Claimed: true, Info: id.Info}
}

// refuse sends an authentication error and closes with 4001. Before
// authentication (pendingOnly) it does nothing once the client is in.
func (s *Server) refuse(st *socketState, text string, pendingOnly bool) {
	st.mu.Lock()
	if pendingOnly && st.inbound != nil {
		st.mu.Unlock()
		return
	}
	s.clearDeadline(st) // the connection ends here, not at a deadline too
	st.mu.Unlock()
	s.metrics.ProtocolErrors.WithLabelValues(CodeUnauthenticated).Inc()
	st.out.Push(ErrorFrame(CodeUnauthenticated, text, nil))
	st.out.Close(CloseAuth, text)
}

// The deadline. A timer ends the connection when it passes, unless a frame
// read before it is still being handled: that frame may be the token (or
// refresh) that moves the deadline, so the reader decides once it is done
// with the frame (doneReading). A refresh that arrived in time therefore
// never loses to the timer, however the two interleave.

// armDeadline makes deadline, with the refusal text, the connection's
// only one. Called with st.mu held.
func (s *Server) armDeadline(st *socketState, deadline time.Time, text string) {
	s.clearDeadline(st)
	st.deadline = deadline
	generation := st.deadlines
	st.timer = time.AfterFunc(time.Until(deadline), func() { s.deadlinePassed(st, generation, text) })
}

// clearDeadline forgets any deadline, passed or not. Called with st.mu held.
func (s *Server) clearDeadline(st *socketState) {
	if st.timer != nil {
		st.timer.Stop()
		st.timer = nil
	}
	st.deadlines++ // a timer already firing finds itself outdated
	st.deadline = time.Time{}
	st.due = ""
	st.pastDue.Store(false)
}

// deadlinePassed is the timer of deadline number generation firing.
func (s *Server) deadlinePassed(st *socketState, generation uint64, text string) {
	st.mu.Lock()
	if st.ended || generation != st.deadlines {
		st.mu.Unlock()
		return
	}
	st.due = text
	st.pastDue.Store(true) // before looking at reading; doneReading looks the other way round
	reading := st.reading.Load()
	st.mu.Unlock()
	if !reading {
		s.lapse(st)
	}
}

// readingFrame marks a frame, read just now, as being handled.
func (st *socketState) readingFrame() { st.reading.Store(true) }

// doneReading ends the handling of a frame (calling it again does
// nothing): if the deadline passed meanwhile and that frame did not move
// it, the connection ends now.
func (s *Server) doneReading(st *socketState) {
	if st.reading.Swap(false) && st.pastDue.Load() {
		s.lapse(st)
	}
}

// lapse ends the connection for a deadline that passed, once.
func (s *Server) lapse(st *socketState) {
	st.mu.Lock()
	text := st.due
	st.due = ""
	st.pastDue.Store(false)
	st.mu.Unlock()
	if text != "" {
		s.refuse(st, text, false)
	}
}
