package stack

import "path/filepath"

// Home is the layout of a stack's home directory. Dir is absolute.
type Home struct {
	Dir string
}

// NewHome returns the layout of the home at dir, made absolute.
func NewHome(dir string) (Home, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return Home{}, err
	}
	return Home{Dir: abs}, nil
}

// Names of the entries directly in a home.
const (
	StackFile    = "stack.json"    // where the services listen, the stack's DSNs (0600)
	SecretsFile  = "secrets.json"  // the application roles' passwords (0600)
	ServicesFile = "services.json" // the services' pids and addresses, while `up` runs
	RoutingFile  = "routing.json"  // the API router's last view of the nodes
	PortsFile    = "ports.json"    // internal ports chosen at first start
	TokenKeyFile = "token.key"     // the API's token signing key (0600)
	ServiceKey   = "service.key"   // the key of calls between the stack's services (0600)
	PassFile     = "pgpass"        // libpq password file of the administrator DSNs (0600)
	LockFile     = "up.lock"       // held by the running `up`
	ControlFile  = "control.sock"  // the cluster supervisor's control socket
	LogsDir      = "logs"          // service and PostgreSQL logs
	ClustersDir  = "clusters"      // one directory per cluster: state, secrets, data directories
)

// Path returns the path of the entry name directly in the home.
func (h Home) Path(name string) string { return filepath.Join(h.Dir, name) }

// Stack is the path of stack.json.
func (h Home) Stack() string { return h.Path(StackFile) }

// Secrets is the path of secrets.json.
func (h Home) Secrets() string { return h.Path(SecretsFile) }

// Services is the path of services.json.
func (h Home) Services() string { return h.Path(ServicesFile) }

// Routing is the path of routing.json.
func (h Home) Routing() string { return h.Path(RoutingFile) }

// Ports is the path of ports.json.
func (h Home) Ports() string { return h.Path(PortsFile) }

// TokenKey is the path of the API's token signing key.
func (h Home) TokenKey() string { return h.Path(TokenKeyFile) }

// ServiceKeyFile is the path of the key that authenticates the services'
// calls to each other.
func (h Home) ServiceKeyFile() string { return h.Path(ServiceKey) }

// PassFile is the path of the libpq password file.
func (h Home) PassFile() string { return h.Path(PassFile) }

// Lock is the path of the file `up` holds locked while it runs.
func (h Home) Lock() string { return h.Path(LockFile) }

// Logs is the directory of the logs.
func (h Home) Logs() string { return h.Path(LogsDir) }

// Log is the path of the log of the service name.
func (h Home) Log(name string) string { return filepath.Join(h.Logs(), name+".log") }

// Clusters is the directory of the clusters.
func (h Home) Clusters() string { return h.Path(ClustersDir) }

// RedisDir is the directory of the feed's Redis: its config and password.
const RedisDir = "redis"

// Redis is the directory of the feed's Redis.
func (h Home) Redis() string { return h.Path(RedisDir) }

// RedisConf is the path of the Redis config `up` writes (0600: it holds
// the password).
func (h Home) RedisConf() string { return filepath.Join(h.Redis(), "redis.conf") }

// RedisPassword is the path of the Redis password (0600), which the API,
// the feed worker and `feed check` read.
func (h Home) RedisPassword() string { return filepath.Join(h.Redis(), "password") }

// Control is the path of the control socket of the running `up`.
func (h Home) Control() string { return h.Path(ControlFile) }

// Cluster is the directory of the cluster name.
func (h Home) Cluster(name string) string { return filepath.Join(h.Clusters(), name) }

// RedisPidFile is where redis-server writes its pid.
func (h Home) RedisPidFile() string { return h.RedisConf() + ".pid" }
