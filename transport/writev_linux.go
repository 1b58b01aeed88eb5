package transport

import (
	"net"
	"syscall"
	"unsafe"
)

// On Linux an outbox writes without waiting, straight on the socket's
// descriptor: everything queued in one writev, which a flusher round
// gives each socket.

// iovecs is a flusher lane's buffer for the writev vector, reused so a
// round allocates nothing.
type iovecs []syscall.Iovec

func newIovecs() iovecs { return make(iovecs, 0, 64) }

// maxIovecs is Linux's IOV_MAX: the most buffers one writev takes.
const maxIovecs = 1024

// rawSocket is conn's descriptor, to write without waiting; nil if it
// has none (then the outbox writes from a goroutine of its own).
func rawSocket(conn net.Conn) syscall.RawConn {
	if sc, ok := conn.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			return raw
		}
	}
	return nil
}

// writeWithoutWaiting writes frames to the socket with as few writev calls
// as it takes, never waiting for room: it returns how many bytes the
// socket took and an error other than "would block".
func writeWithoutWaiting(raw syscall.RawConn, frames [][]byte, iov *iovecs) (written int, err error) {
	if len(frames) == 1 {
		return writeOneWithoutWaiting(raw, frames[0])
	}
	for len(frames) > 0 {
		chunk := frames[:min(len(frames), maxIovecs)]
		frames = frames[len(chunk):]
		want := 0
		vec := (*iov)[:0]
		for _, frame := range chunk {
			v := syscall.Iovec{Base: &frame[0]}
			v.SetLen(len(frame))
			vec = append(vec, v)
			want += len(frame)
		}
		*iov = vec
		var n uintptr
		var errno syscall.Errno
		if rawErr := raw.Write(func(fd uintptr) bool {
			for {
				n, _, errno = syscall.Syscall(syscall.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&vec[0])), uintptr(len(vec)))
				if errno != syscall.EINTR {
					return true
				}
			}
		}); rawErr != nil {
			return written, rawErr
		}
		clear(vec) // the frames are not ours to keep alive
		switch {
		case errno == syscall.EAGAIN:
			return written, nil
		case errno != 0:
			return written, errno
		}
		written += int(n)
		if int(n) < want {
			return written, nil
		}
	}
	return written, nil
}

func writeOneWithoutWaiting(raw syscall.RawConn, frame []byte) (int, error) {
	var n int
	var errno error
	if err := raw.Write(func(fd uintptr) bool {
		for {
			n, errno = syscall.Write(int(fd), frame)
			if errno != syscall.EINTR {
				return true
			}
		}
	}); err != nil {
		return 0, err
	}
	switch {
	case errno == syscall.EAGAIN:
		return 0, nil
	case errno != nil:
		return 0, errno
	}
	return n, nil
}
