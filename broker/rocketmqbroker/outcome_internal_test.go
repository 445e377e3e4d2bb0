package rocketmqbroker

import (
	"context"
	"errors"
	"fmt"
	"net"
	"syscall"
	"testing"

	rmqerrors "github.com/apache/rocketmq-client-go/v2/errors"
)

func TestSendNotStored(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"no route", errors.New("the topic=x route info not found"), true},
		{"no connection", &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}, true},
		{"producer not started", rmqerrors.ErrNotRunning, true},
		{"client shut down", rmqerrors.ErrService, true},
		{"broker refused", fmt.Errorf("CODE: 1, DESC: injected fault"), true},
		{"broker busy", fmt.Errorf("CODE: 2, DESC: [PC_SYNCHRONIZED]broker busy"), true},
		{"too large", fmt.Errorf("CODE: 13, DESC: the message body size over max value"), true},
		{"timeout (or connection lost)", rmqerrors.ErrRequestTimeout, false},
		{"ctx ended", context.DeadlineExceeded, false},
		{"write failed", &net.OpError{Op: "write", Net: "tcp", Err: syscall.EPIPE}, false},
		{"unknown", errors.New("something else"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := sendNotStored(tt.err); got != tt.want {
				t.Fatalf("sendNotStored(%v) = %v, want %v", tt.err, got, tt.want)
			}
		})
	}
}

func TestSendRetriable(t *testing.T) {
	for _, tt := range []struct {
		err  error
		want bool
	}{
		{rmqerrors.ErrRequestTimeout, true},
		{fmt.Errorf("CODE: 1, DESC: system error"), true},
		{fmt.Errorf("CODE: 14, DESC: service not available"), true},
		{fmt.Errorf("CODE: 2, DESC: busy"), false},
		{fmt.Errorf("CODE: 13, DESC: illegal"), false},
	} {
		if got := sendRetriable(tt.err); got != tt.want {
			t.Errorf("sendRetriable(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}
