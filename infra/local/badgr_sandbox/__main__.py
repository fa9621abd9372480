from infra.local.badgr_sandbox.server import main

main()
