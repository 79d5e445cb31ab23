// Package sysinfo gathers the typed facts an investigation starts from:
// the host, its resources and their use, read from procfs, sysfs and the
// kernel log (not by parsing command output). Engines read them: the chat
// engines as the prompt's system information, the offline engine as the
// input of its health sweep.
package sysinfo

import "time"

// Facts is one snapshot of the host. Fields that could not be read stay
// zero and the reason is in Warnings; nothing here is fatal.
type Facts struct {
	CollectedAt time.Time `json:"collected_at"`
	Hostname    string    `json:"hostname"`
	// Distro is the PRETTY_NAME of os-release ("Debian GNU/Linux 12 (bookworm)").
	Distro         string        `json:"distro"`
	Kernel         string        `json:"kernel"` // uname -r
	Arch           string        `json:"arch"`   // uname -m
	CPUs           int           `json:"cpus"`   // online CPUs
	Uptime         time.Duration `json:"uptime"`
	Load           [3]float64    `json:"load"`
	Virtualization string        `json:"virtualization,omitempty"` // "kvm", "lxc", "" when bare metal or unknown
	InitSystem     string        `json:"init_system"`              // "systemd" when PID 1 is systemd, else PID 1's comm
	// Addresses are the private (RFC 1918, ULA) addresses of the
	// interfaces that are up, as "10.0.0.5 (eth0)".
	Addresses []string `json:"addresses,omitempty"`

	// CPU is the utilisation measured over Interval (two /proc/stat reads).
	CPU      CPUUse        `json:"cpu"`
	Interval time.Duration `json:"interval"`
	Memory   Memory        `json:"memory"`
	// PSI is nil where the kernel has no pressure stall information.
	PSI         *PSI         `json:"psi,omitempty"`
	Filesystems []Filesystem `json:"filesystems"`
	Disks       []Disk       `json:"disks,omitempty"`
	// BlockDevices are the whole block devices present now (size above
	// zero: a detached loop device or an empty drive is not there), so a
	// kernel log error can be told from one about a device since gone.
	BlockDevices []BlockDevice `json:"block_devices,omitempty"`
	Limits       Limits        `json:"limits"`
	Network      Network       `json:"network"`
	// TopCPU and TopMemory are the busiest processes (at most 10 each).
	TopCPU    []Process `json:"top_cpu"`
	TopMemory []Process `json:"top_memory"`
	// FDHeavy are processes using most of their open-files limit (over
	// half), worst first.
	FDHeavy []Process `json:"fd_heavy,omitempty"`
	// TopIO are the processes that moved the most bytes from and to
	// storage over Interval (/proc/[pid]/io read_bytes and write_bytes),
	// or waited longest for block I/O where delay accounting is on; at
	// most 10, with their I/O fields filled.
	TopIO []Process `json:"top_io,omitempty"`
	// Cgroups are the cgroups with a memory or pids limit that was hit
	// (OOM kills, max events) or is nearly reached.
	Cgroups []Cgroup `json:"cgroups,omitempty"`
	// FailedUnits and RestartingUnits are empty where systemd does not
	// run; Services says why ("systemd is not PID 1").
	FailedUnits     []Unit `json:"failed_units,omitempty"`
	RestartingUnits []Unit `json:"restarting_units,omitempty"`
	Services        string `json:"services,omitempty"`
	// KernelLog holds recent kernel messages of priority warning or worse
	// (at most 50, newest last), from /dev/kmsg. The stack frames and
	// registers of oops and warning dumps are left out: one dump is dozens
	// of records and would push out the messages that say what happened.
	KernelLog []LogLine `json:"kernel_log,omitempty"`
	// Catalog says which trace catalog entries work on this kernel; the
	// caller fills it (sysinfo does not load BPF).
	Catalog  []CatalogEntry `json:"catalog,omitempty"`
	Warnings []string       `json:"warnings,omitempty"`
}

type CPUUse struct {
	// Percentages of all CPUs' time over the interval (User includes
	// nice, System includes hard and soft interrupts).
	User   float64 `json:"user"`
	System float64 `json:"system"`
	IOWait float64 `json:"iowait"`
	Steal  float64 `json:"steal"`
	Idle   float64 `json:"idle"`
	// RunQueue is procs_running from /proc/stat (includes the reader);
	// Blocked is procs_blocked (tasks in uninterruptible sleep).
	RunQueue int `json:"run_queue"`
	Blocked  int `json:"blocked"`
}

type Memory struct {
	TotalBytes     uint64 `json:"total_bytes"`
	AvailableBytes uint64 `json:"available_bytes"`
	SwapTotalBytes uint64 `json:"swap_total_bytes"`
	SwapFreeBytes  uint64 `json:"swap_free_bytes"`
	// Major page faults and swap-ins over the interval, per second
	// (/proc/vmstat pgmajfault, pswpin).
	MajorFaultsPerSec float64 `json:"major_faults_per_sec"`
	SwapInPerSec      float64 `json:"swap_in_per_sec"`
	// OOMKills is /proc/vmstat oom_kill since boot (0 where absent).
	OOMKills uint64 `json:"oom_kills"`
}

// PSI is /proc/pressure/{cpu,memory,io}.
type PSI struct {
	CPU    Pressure `json:"cpu"`
	Memory Pressure `json:"memory"`
	IO     Pressure `json:"io"`
}

// Pressure holds the avg10 and avg60 percentages of one resource.
type Pressure struct {
	SomeAvg10 float64 `json:"some_avg10"`
	SomeAvg60 float64 `json:"some_avg60"`
	FullAvg10 float64 `json:"full_avg10"`
	FullAvg60 float64 `json:"full_avg60"`
}

// Filesystem is one mounted block or tmpfs filesystem (pseudo
// filesystems such as proc, sysfs, cgroup, overlay lowers are left out).
type Filesystem struct {
	Mount      string `json:"mount"`
	Device     string `json:"device"`
	Type       string `json:"type"`
	ReadOnly   bool   `json:"read_only"`
	SizeBytes  uint64 `json:"size_bytes"`
	UsedBytes  uint64 `json:"used_bytes"`
	AvailBytes uint64 `json:"avail_bytes"` // available to unprivileged users
	Inodes     uint64 `json:"inodes"`      // 0 when the filesystem has no inode limit
	InodesUsed uint64 `json:"inodes_used"`
	InodesFree uint64 `json:"inodes_free"`
}

// Disk is one block device's activity over the interval (/proc/diskstats;
// partitions, and devices with neither I/O nor requests in flight, are
// left out).
type Disk struct {
	Name          string  `json:"name"`
	ReadsPerSec   float64 `json:"reads_per_sec"`
	WritesPerSec  float64 `json:"writes_per_sec"`
	ReadBytesSec  float64 `json:"read_bytes_per_sec"`
	WriteBytesSec float64 `json:"write_bytes_per_sec"`
	// UtilPercent is the time the device was busy; AwaitMS the mean time
	// per completed request; InFlight the requests in flight at the end.
	UtilPercent float64 `json:"util_percent"`
	AwaitMS     float64 `json:"await_ms"`
	InFlight    uint64  `json:"in_flight"`
}

// Limits are the system-wide tables that run out.
type Limits struct {
	FileHandles    uint64 `json:"file_handles"` // /proc/sys/fs/file-nr allocated
	FileHandlesMax uint64 `json:"file_handles_max"`
	Tasks          uint64 `json:"tasks"` // threads, all processes
	Processes      uint64 `json:"processes"`
	PIDMax         uint64 `json:"pid_max"`
	ThreadsMax     uint64 `json:"threads_max"`
}

// Network holds counters since boot and over the interval, and the name
// resolution check.
type Network struct {
	// From /proc/net/snmp and /proc/net/netstat, over the interval.
	TCPRetransPerSec float64     `json:"tcp_retrans_per_sec"`
	TCPOutSegsPerSec float64     `json:"tcp_out_segs_per_sec"`
	ListenOverflows  uint64      `json:"listen_overflows"` // since boot
	ListenDrops      uint64      `json:"listen_drops"`
	TCPAttemptFails  uint64      `json:"tcp_attempt_fails"`
	Interfaces       []Interface `json:"interfaces,omitempty"`
	Resolvers        []Resolver  `json:"resolvers,omitempty"`
	// ResolvConf is the resolv.conf path read ("/etc/resolv.conf").
	ResolvConf string `json:"resolv_conf,omitempty"`
	// Listeners are the TCP sockets in LISTEN state with the process that
	// owns each, read as the agent (root) sees them: the command sandbox
	// drops the capabilities `ss -p` needs to name owners, and the offline
	// engine needs them to say who holds a port a service cannot bind, and
	// which processes are the servers to trace.
	Listeners []Listener `json:"listeners,omitempty"`
}

// Listener is one listening TCP socket (IPv4 or IPv6).
type Listener struct {
	Address string `json:"address"` // "0.0.0.0:8080", "[::]:443"
	Port    int    `json:"port"`
	// Queued is the connections waiting for accept() (ss's Recv-Q);
	// Backlog is the listen() backlog (ss's Send-Q), 0 where it could not
	// be read.
	Queued  uint64 `json:"queued"`
	Backlog uint64 `json:"backlog,omitempty"`
	// PID and Comm are the owning process; zero when no process holds
	// the socket's file (a kernel listener) or it is in another PID
	// namespace.
	PID  int    `json:"pid,omitempty"`
	Comm string `json:"comm,omitempty"`
}

// Interface is one network interface (lo left out) with its error and
// drop counters since boot.
type Interface struct {
	Name      string `json:"name"`
	Up        bool   `json:"up"`
	RxErrors  uint64 `json:"rx_errors"`
	TxErrors  uint64 `json:"tx_errors"`
	RxDropped uint64 `json:"rx_dropped"`
	TxDropped uint64 `json:"tx_dropped"`
}

// Resolver is one nameserver of resolv.conf and whether it answered a
// query (any answer, NXDOMAIN and SERVFAIL included, counts; a timeout,
// an ICMP refusal or a REFUSED answer does not).
type Resolver struct {
	Address  string `json:"address"`
	Answered bool   `json:"answered"`
	// Rcode is the answer's response code ("NOERROR", "SERVFAIL"...).
	Rcode     string  `json:"rcode,omitempty"`
	Error     string  `json:"error,omitempty"`
	LatencyMS float64 `json:"latency_ms,omitempty"`
}

// Process is one process; Cmdline is redacted and bounded.
type Process struct {
	PID        int     `json:"pid"`
	Comm       string  `json:"comm"`
	Cmdline    string  `json:"cmdline"`
	User       string  `json:"user"`
	State      string  `json:"state"`       // R, S, D, Z...
	CPUPercent float64 `json:"cpu_percent"` // over the interval; 100 = one CPU
	RSSBytes   uint64  `json:"rss_bytes"`
	Threads    int     `json:"threads"`
	OpenFDs    int     `json:"open_fds"`
	FDLimit    uint64  `json:"fd_limit"` // soft RLIMIT_NOFILE

	// The I/O fields are filled in TopIO only, over the interval.
	// ReadBytesPerSec and WriteBytesPerSec are what the process made
	// storage read and write (/proc/[pid]/io read_bytes, write_bytes: page
	// cache hits and writes that are cancelled before writeback do not
	// count); ReadCallsPerSec and WriteCallsPerSec its read and write
	// system calls of any kind (syscr, syscw).
	ReadBytesPerSec  float64 `json:"read_bytes_per_sec,omitempty"`
	WriteBytesPerSec float64 `json:"write_bytes_per_sec,omitempty"`
	ReadCallsPerSec  float64 `json:"read_calls_per_sec,omitempty"`
	WriteCallsPerSec float64 `json:"write_calls_per_sec,omitempty"`
	// IODelayPercent is the time its threads waited for block I/O, as a
	// share of the interval (delayacct_blkio_ticks of /proc/[pid]/stat;
	// above 100 when several threads wait at once). It stays 0 where
	// delay accounting is off (kernel.task_delayacct, the default).
	IODelayPercent float64 `json:"io_delay_percent,omitempty"`
	// SyncFiles are files it holds open for synchronous or direct I/O,
	// with the flags that make them so ("/var/lib/db/wal (O_DSYNC)"), at
	// most maxSyncFiles, from /proc/[pid]/fdinfo.
	SyncFiles []string `json:"sync_files,omitempty"`
}

// BlockDevice is one whole block device of /sys/class/block.
type BlockDevice struct {
	Name      string `json:"name"`
	SizeBytes uint64 `json:"size_bytes"`
	ReadOnly  bool   `json:"read_only,omitempty"`
	// BackingFile is a loop device's file.
	BackingFile string `json:"backing_file,omitempty"`
}

// Cgroup is a cgroup (v1 or v2) whose memory or pids controller shows a
// limit hit or nearly hit.
type Cgroup struct {
	Path             string `json:"path"`    // relative to the cgroup mount, "/system.slice/x.service"
	Version          int    `json:"version"` // 1 or 2
	MemoryLimitBytes uint64 `json:"memory_limit_bytes,omitempty"`
	// MemoryBytes is the usage; near the limit it is the usage less the
	// inactive file cache, which the kernel reclaims before any OOM kill.
	MemoryBytes uint64 `json:"memory_bytes,omitempty"`
	// OOMKills counts the processes of this cgroup killed by the OOM
	// killer (memory.events.local where the kernel has it).
	OOMKills      uint64 `json:"oom_kills,omitempty"`
	PIDsMax       uint64 `json:"pids_max,omitempty"`
	PIDs          uint64 `json:"pids,omitempty"`
	PIDsMaxEvents uint64 `json:"pids_max_events,omitempty"` // forks refused at pids.max
}

// Unit is a systemd unit.
type Unit struct {
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
	ActiveState string `json:"active_state"`
	SubState    string `json:"sub_state"`
	Restarts    int    `json:"restarts"` // NRestarts
	Result      string `json:"result,omitempty"`
}

// LogLine is one kernel log message.
type LogLine struct {
	// Age is how long before CollectedAt the message was logged.
	Age      time.Duration `json:"age"`
	Priority int           `json:"priority"` // 0 emerg … 4 warning
	Text     string        `json:"text"`
}

// CatalogEntry says whether a trace catalog entry runs here.
type CatalogEntry struct {
	Name      string `json:"name"`
	Answers   string `json:"answers"`
	Supported bool   `json:"supported"`
	Reason    string `json:"reason,omitempty"`
}
