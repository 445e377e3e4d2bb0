package core

import (
	"fmt"
	"os"
)

// FileOf returns a duplicate of the socket under a listener or connection
// (net.TCPListener, net.UnixConn, ...), for handing it to another process
// in a hot upgrade: the socket stays open as long as either copy is.
func FileOf(sock any) (*os.File, error) {
	fs, ok := sock.(interface{ File() (*os.File, error) })
	if !ok {
		return nil, fmt.Errorf("%T cannot be passed on", sock)
	}
	f, err := fs.File()
	if err != nil {
		return nil, fmt.Errorf("duplicating the socket of %T: %w", sock, err)
	}
	return f, nil
}
