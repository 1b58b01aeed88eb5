package transport

import (
	"errors"
	"time"
)

// A socket's authentication: its token verified at the handshake or in an
// auth frame, refreshed while it is open, and the deadline (the auth
// timeout, then the token's expiry) that ends it.

// authenticate verifies a token for a new or an already open connection.
func (s *Server) authenticate(st *socketState, token string) {
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
		s.refuse(st, AuthInvalid, false)
		return
	}
	if st.timer != nil {
		st.timer.Stop()
		st.timer = nil
	}
	if !id.Expires.IsZero() {
		st.timer = time.AfterFunc(time.Until(id.Expires)+s.opts.Auth.cfg.Leeway, func() { s.refuse(st, AuthExpired, false) })
	}
	refresh := st.inbound != nil
	st.mu.Unlock()
	if refresh {
		st.out.Push(AuthenticatedFrame(id.User))
		return
	}
	st.out.User, st.out.Info = id.User, id.Info
	if s.opts.Limits.MaxInfoBytes > 0 && len(id.Info) > s.opts.Limits.MaxInfoBytes {
		st.out.Info = nil // too large to show in presence
	}
	st.out.Push(AuthenticatedFrame(id.User))
	s.open(st, id)
}

// open hands an authenticated connection to the broker.
func (s *Server) open(st *socketState, id *Identity) {
	perms := Permissions{Subscribe: s.opts.DefaultSubscribe, Publish: s.opts.DefaultPublish,
		DenySubscribe: s.opts.DenySubscribe, DenyPublish: s.opts.DenyPublish}
	if id.Subscribe != nil {
		perms.Subscribe = id.Subscribe
	}
	if id.Publish != nil {
		perms.Publish = id.Publish
	}
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

// refuse sends an authentication error and closes with 4001. Before
// authentication (pendingOnly) it does nothing once the client is in.
func (s *Server) refuse(st *socketState, text string, pendingOnly bool) {
	st.mu.Lock()
	if pendingOnly && st.inbound != nil {
		st.mu.Unlock()
		return
	}
	st.mu.Unlock()
	s.metrics.ProtocolErrors.WithLabelValues(CodeUnauthenticated).Inc()
	st.out.Push(ErrorFrame(CodeUnauthenticated, text, nil))
	st.out.Close(CloseAuth, text)
}
