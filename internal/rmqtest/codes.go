package rmqtest

// Request codes of the RocketMQ remoting protocol that the test broker
// knows. The values are RocketMQ's (org.apache.rocketmq.common.protocol.
// RequestCode); the Go client uses the same numbers.
const (
	CodeSendMessage             int16 = 10
	CodePullMessage             int16 = 11
	CodeQueryConsumerOffset     int16 = 14
	CodeUpdateConsumerOffset    int16 = 15
	CodeSearchOffsetByTimestamp int16 = 29
	CodeGetMaxOffset            int16 = 30
	CodeGetMinOffset            int16 = 31
	CodeHeartbeat               int16 = 34
	CodeUnregisterClient        int16 = 35
	CodeConsumerSendMsgBack     int16 = 36
	CodeGetConsumerListByGroup  int16 = 38
	CodeNotifyConsumerIDsChange int16 = 40
	CodeGetKVConfig             int16 = 101
	CodeGetRouteInfoByTopic     int16 = 105
	CodeGetBrokerClusterInfo    int16 = 106
	CodeGetAllTopicList         int16 = 206
	CodeSendMessageV2           int16 = 310
	CodeSendBatchMessage        int16 = 320
)

// Response codes (org.apache.rocketmq.common.protocol.ResponseCode).
const (
	respSuccess                 int16 = 0
	respSystemError             int16 = 1
	respRequestCodeNotSupported int16 = 3
	respFlushDiskTimeout        int16 = 10
	respSlaveNotAvailable       int16 = 11
	respFlushSlaveTimeout       int16 = 12
	respMessageIllegal          int16 = 13
	respTopicNotExist           int16 = 17
	respPullNotFound            int16 = 19
	respPullRetryImmediately    int16 = 20
	respPullOffsetMoved         int16 = 21
	respQueryNotFound           int16 = 22
)

// Flag bits of a remoting command.
const (
	flagResponse = 1 << 0
	flagOneway   = 1 << 1
)

// Pull request sysFlag bits (PullSysFlag).
const (
	pullFlagCommitOffset = 1 << 0
	pullFlagSuspend      = 1 << 1
	pullFlagSubscription = 1 << 2
)

// Message sysFlag bits (MessageSysFlag) the broker looks at.
const (
	msgFlagTransactionPrepared = 1 << 2
	msgFlagTransactionMask     = 3 << 2
	msgFlagBornHostV6          = 1 << 4
	msgFlagStoreHostV6         = 1 << 5
)

// brokerVersion is what the broker reports in the version field of its
// responses (a 4.9.x broker). The Go client only records it.
const brokerVersion = 399
