from shipper.cli import main

if __name__ == "__main__":  # not when a spawned parse worker imports it
    raise SystemExit(main())
