package rocketmqbroker

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/apache/rocketmq-client-go/v2/rlog"
)

// The RocketMQ client logs through one process-wide logger (package
// rlog, logrus on stderr by default). The first New replaces it with
// clientLog, which sends everything the client logs to that Broker's
// Config.Logger at debug level, with the client's level in attribute
// "rocketmq_level". Later Brokers share it.
var (
	clientLogOnce sync.Once
	clientLog     = &rlogBridge{}
)

func installClientLogger(l *slog.Logger) {
	clientLogOnce.Do(func() {
		clientLog.log.Store(l.With("component", "rocketmq-client"))
		rlog.SetLogger(clientLog)
	})
}

// rlogBridge implements rlog.Logger on slog.
type rlogBridge struct {
	log atomic.Pointer[slog.Logger]
}

func (r *rlogBridge) emit(level, msg string, fields map[string]interface{}) {
	l := r.log.Load()
	if l == nil || !l.Enabled(context.Background(), slog.LevelDebug) {
		return
	}
	attrs := make([]slog.Attr, 0, len(fields)+1)
	attrs = append(attrs, slog.String("rocketmq_level", level))
	for k, v := range fields {
		attrs = append(attrs, slog.Any(k, v))
	}
	l.LogAttrs(context.Background(), slog.LevelDebug, msg, attrs...)
}

func (r *rlogBridge) Debug(msg string, fields map[string]interface{}) { r.emit("debug", msg, fields) }
func (r *rlogBridge) Info(msg string, fields map[string]interface{})  { r.emit("info", msg, fields) }
func (r *rlogBridge) Warning(msg string, fields map[string]interface{}) {
	r.emit("warning", msg, fields)
}
func (r *rlogBridge) Error(msg string, fields map[string]interface{}) { r.emit("error", msg, fields) }

// Fatal only logs: the client must not end the process.
func (r *rlogBridge) Fatal(msg string, fields map[string]interface{}) { r.emit("fatal", msg, fields) }

// Level is ignored: the slog handler decides.
func (r *rlogBridge) Level(string) {}

// OutputPath is ignored: the slog handler decides.
func (r *rlogBridge) OutputPath(string) error { return nil }
