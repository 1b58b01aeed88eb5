package transport

import (
	"time"

	"github.com/lxzan/gws"

	pb "github.com/switchboard/switchboard/proto/switchboard/v1"
)

// socketEvents adapts gws callbacks to the broker's Inbound.
type socketEvents struct{ s *Server }

func stateOf(socket *gws.Conn) *socketState {
	v, _ := socket.Session().Load(socketKey)
	return v.(*socketState)
}

func (e *socketEvents) OnOpen(*gws.Conn) {}

func (e *socketEvents) OnClose(socket *gws.Conn, _ error) {
	st := stateOf(socket)
	st.out.socketGone()
	st.mu.Lock()
	st.ended = true
	if st.timer != nil {
		st.timer.Stop()
	}
	inbound := st.inbound
	st.mu.Unlock()
	s := e.s
	s.mu.Lock()
	delete(s.sockets, st)
	s.mu.Unlock()
	s.ips.release(st.ip)
	if inbound != nil {
		s.users.leave(st.out.User)
		inbound.Closed()
	}
	s.metrics.Connections.Dec()
}

func (e *socketEvents) OnPing(socket *gws.Conn, payload []byte) {
	st := stateOf(socket)
	st.lastActive.Store(time.Now().UnixNano())
	st.out.Push(PongControlFrame(payload))
}

func (e *socketEvents) OnPong(socket *gws.Conn, _ []byte) {
	stateOf(socket).lastActive.Store(time.Now().UnixNano())
}

func (e *socketEvents) OnMessage(socket *gws.Conn, message *gws.Message) {
	defer message.Close()
	s, st := e.s, stateOf(socket)
	now := time.Now()
	st.lastActive.Store(now.UnixNano())
	st.readingFrame()
	defer s.doneReading(st)
	s.metrics.MessagesIn.Inc()
	if message.Opcode != gws.OpcodeText {
		if s.admit(st, nil, nil) {
			s.protocolError(st.out, &ProtocolError{Code: CodeBinaryFrame, Text: "Binary frames are not supported: send JSON text frames"})
		}
		return
	}
	cmd, perr := DecodeCommand(message.Bytes(), s.opts.Limits)
	// Every frame counts against a budget, invalid ones too, before any
	// answer is written.
	if !s.admit(st, cmd, perr) {
		return
	}
	inbound, perms := st.authenticated()
	if inbound == nil && s.opts.Auth != nil {
		// Nothing but an auth frame is processed before authentication.
		if perr == nil && cmd.Kind == pb.ClientCommand_KIND_AUTH {
			s.authenticate(st, cmd.Token, now)
		} else {
			s.refuse(st, AuthNoToken, true)
		}
		return
	}
	if perr != nil {
		s.protocolError(st.out, perr)
		return
	}
	switch cmd.Kind {
	case pb.ClientCommand_KIND_AUTH:
		if s.opts.Auth == nil {
			st.out.Push(AuthenticatedFrame(st.out.User)) // development mode: nothing to check
		} else {
			s.authenticate(st, cmd.Token, now)
		}
		return
	case pb.ClientCommand_KIND_SUBSCRIBE, pb.ClientCommand_KIND_PRESENCE, pb.ClientCommand_KIND_HISTORY:
		if !perms.CanSubscribe(cmd.Channel) {
			s.protocolError(st.out, &ProtocolError{Code: CodeForbidden, Text: "Not allowed to subscribe to " + cmd.Channel, ID: cmd.Id})
			return
		}
	case pb.ClientCommand_KIND_PUBLISH:
		if !perms.CanPublish(cmd.Channel) {
			s.protocolError(st.out, &ProtocolError{Code: CodeForbidden, Text: "Not allowed to publish to " + cmd.Channel, ID: cmd.Id})
			return
		}
	case pb.ClientCommand_KIND_SEND:
		if !perms.CanSend(cmd.User) {
			s.protocolError(st.out, &ProtocolError{Code: CodeForbidden, Text: "Not allowed to send to " + cmd.User, ID: cmd.Id})
			return
		}
	}
	// Not a token: the deadline needs no more waiting for this frame, while
	// Command may wait a long time.
	s.doneReading(st)
	st.waitingOnBroker.Store(true)
	inbound.Command(cmd)
	st.waitingOnBroker.Store(false)
	// Whatever the client sent meanwhile is still unread: its idle time
	// starts now, when reading resumes.
	st.lastActive.Store(time.Now().UnixNano())
}

// admit applies the rate limits to a frame: publications (message, send)
// spend the connection's and the user's publication budget, every other
// frame, invalid ones included, the connection's control budget.
func (s *Server) admit(st *socketState, cmd *pb.ClientCommand, perr *ProtocolError) bool {
	now := time.Now()
	var id []byte
	publication := false
	switch {
	case cmd != nil:
		id = cmd.Id
		publication = cmd.Kind == pb.ClientCommand_KIND_PUBLISH || cmd.Kind == pb.ClientCommand_KIND_SEND
	case perr != nil:
		id = perr.ID
	}
	if publication {
		if (st.bucket == nil || st.bucket.take(now)) && s.users.take(st.out.User, now) {
			return true
		}
	} else if st.controlBucket == nil || st.controlBucket.take(now) {
		return true
	}
	if s.opts.RateDisconnect {
		s.metrics.ProtocolErrors.WithLabelValues(CodeRateLimited).Inc()
		st.out.Push(ErrorFrame(CodeRateLimited, "Rate limit exceeded", id))
		st.out.Close(CloseRateLimited, "rate limit exceeded")
		return false
	}
	s.protocolError(st.out, &ProtocolError{Code: CodeRateLimited, Text: "Rate limit exceeded", ID: id})
	return false
}
